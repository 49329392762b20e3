"""Who answers for a VIP: the bed's observer (asks by ARP/NS, counts replying MACs) and a
hand-driven responder; used by tests."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from scapy.layers.inet6 import (
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
)
from scapy.layers.l2 import ARP, Ether

from lbctl.lab import nsutil

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# -- packets are data ----------------------------------------------------------------------------


def solicited_node(ip6: ipaddress.IPv6Address) -> tuple[ipaddress.IPv6Address, str]:
    """The solicited-node multicast group of an address and its Ethernet MAC (RFC 4291, 2464)."""
    low = ip6.packed[-3:]
    group = ipaddress.IPv6Address(b"\xff\x02" + b"\x00" * 9 + b"\x01\xff" + low)
    mac = "33:33:ff:" + ":".join(f"{b:02x}" for b in low)
    return group, mac


def who_has(src_mac: str, src_ip: IPAddress, target: IPAddress) -> bytes:
    """An ARP who-has (IPv4) or a neighbour solicitation (IPv6) for `target`."""
    if isinstance(target, ipaddress.IPv4Address):
        frame = Ether(dst="ff:ff:ff:ff:ff:ff", src=src_mac) / ARP(
            op=1, hwsrc=src_mac, psrc=str(src_ip), pdst=str(target)
        )
    else:
        group, group_mac = solicited_node(target)
        frame = (
            Ether(dst=group_mac, src=src_mac)
            / IPv6(src=str(src_ip), dst=str(group), hlim=255)
            / ICMPv6ND_NS(tgt=str(target))
            / ICMPv6NDOptSrcLLAddr(lladdr=src_mac)
        )
    return bytes(frame)


def replying_mac(frame: bytes, target: IPAddress) -> str | None:
    """The link-layer address a frame claims for `target` (ARP is-at, or NA), else None."""
    pkt = Ether(frame)
    if isinstance(target, ipaddress.IPv4Address):
        if ARP in pkt and pkt[ARP].op == 2 and pkt[ARP].psrc == str(target):
            return str(pkt[ARP].hwsrc).lower()
        return None
    if ICMPv6ND_NA in pkt and ipaddress.IPv6Address(pkt[ICMPv6ND_NA].tgt) == target:
        if ICMPv6NDOptDstLLAddr in pkt:
            return str(pkt[ICMPv6NDOptDstLLAddr].lladdr).lower()
        return str(pkt[Ether].src).lower()
    return None


def answer_for(frame: bytes, target: IPAddress, mac: str) -> bytes | None:
    """The reply a responder owning `target` at `mac` sends to a request frame, else None."""
    pkt = Ether(frame)
    if isinstance(target, ipaddress.IPv4Address):
        if ARP not in pkt or pkt[ARP].op != 1 or pkt[ARP].pdst != str(target):
            return None
        req = pkt[ARP]
        reply = Ether(dst=req.hwsrc, src=mac) / ARP(
            op=2, hwsrc=mac, psrc=str(target), hwdst=req.hwsrc, pdst=req.psrc
        )
        return bytes(reply)
    if ICMPv6ND_NS not in pkt or ipaddress.IPv6Address(pkt[ICMPv6ND_NS].tgt) != target:
        return None
    asker = ipaddress.IPv6Address(pkt[IPv6].src)
    dst_ip, dst_mac = (asker, pkt[Ether].src) if not asker.is_unspecified else ("ff02::1", None)
    reply = (
        Ether(dst=dst_mac or "33:33:00:00:00:01", src=mac)
        / IPv6(src=str(target), dst=str(dst_ip), hlim=255)
        / ICMPv6ND_NA(tgt=str(target), R=0, S=int(not asker.is_unspecified), O=1)
        / ICMPv6NDOptDstLLAddr(lladdr=mac)
    )
    return bytes(reply)


# -- sockets are the shell -----------------------------------------------------------------------


def open_raw(netns: str, ifname: str) -> socket.socket:
    """An AF_PACKET socket on `ifname` inside `netns` (timeout 50 ms, so loops can stop)."""

    def make() -> socket.socket:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:
            sock.bind((ifname, 0))
        except OSError as err:
            sock.close()
            raise nsutil.NetnsError(f"opening a raw socket on {ifname!r} in {netns!r}") from err
        sock.settimeout(0.05)
        return sock

    return nsutil.run_in_netns(netns, make)


def _recv_incoming(sock: socket.socket) -> bytes | None:
    try:
        data, addr = sock.recvfrom(65535)
    except TimeoutError:
        return None
    return None if addr[2] == PACKET_OUTGOING else data


class _Loop:
    """A daemon thread running `tick` until stop(); a context manager."""

    def __init__(self, name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.tick()

    def tick(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.close()

    def close(self) -> None:
        """Release sockets after the thread ended."""

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass(frozen=True)
class Tick:
    """One probe round: when it was sent (monotonic) and the MACs that answered in it."""

    at: float
    macs: frozenset[str]


class VipObserver(_Loop):
    """Asks for a VIP every `interval` from the observer namespace and records who answers.

    Replies are unicast, so a port that only listens sees nothing: the observer must ask.
    """

    def __init__(
        self,
        netns: str,
        vip: str | IPAddress,
        *,
        src_mac: str,
        src_ip4: str | ipaddress.IPv4Address,
        src_ip6: str | ipaddress.IPv6Address,
        ifname: str = "eth0",
        interval: float = 0.1,
    ) -> None:
        super().__init__(f"observer:{vip}")
        self.vip: IPAddress = ipaddress.ip_address(vip)
        src = src_ip4 if isinstance(self.vip, ipaddress.IPv4Address) else src_ip6
        self._request = who_has(src_mac, ipaddress.ip_address(src), self.vip)
        self._sock = open_raw(netns, ifname)
        self.interval = interval
        self._lock = threading.Lock()
        self._ticks: list[Tick] = []

    def __enter__(self) -> VipObserver:
        self.start()
        return self

    def tick(self) -> None:
        sent = time.monotonic()
        self._sock.send(self._request)
        macs: set[str] = set()
        while (left := sent + self.interval - time.monotonic()) > 0:
            self._sock.settimeout(min(left, 0.05))
            frame = _recv_incoming(self._sock)
            if frame is not None and (mac := replying_mac(frame, self.vip)) is not None:
                macs.add(mac)
        with self._lock:
            self._ticks.append(Tick(sent, frozenset(macs)))

    def close(self) -> None:
        self._sock.close()

    def ticks(self, since: float = 0.0) -> list[Tick]:
        with self._lock:
            return [t for t in self._ticks if t.at >= since]

    def distinct_macs(self, since: float = 0.0) -> set[str]:
        """Every MAC that answered in any round since `since` (monotonic)."""
        return {mac for tick in self.ticks(since) for mac in tick.macs}

    def wait_for(self, predicate: Callable[[list[Tick]], bool], timeout: float) -> list[Tick]:
        """Poll the recorded rounds until `predicate(ticks)` is true; raise after `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.ticks()):
                return self.ticks()
            time.sleep(self.interval / 2)
        raise TimeoutError(f"observer for {self.vip}: condition not met in {timeout} s")


class VipResponder(_Loop):
    """Answers ARP/NS for a VIP with a given MAC from inside a namespace, as a speaker would."""

    def __init__(self, netns: str, vip: str | IPAddress, mac: str, *, ifname: str = "eth0") -> None:
        super().__init__(f"responder:{vip}@{netns}")
        self.vip: IPAddress = ipaddress.ip_address(vip)
        self.mac = mac
        self._sock = open_raw(netns, ifname)
        self.answered = 0

    def __enter__(self) -> VipResponder:
        self.start()
        return self

    def tick(self) -> None:
        frame = _recv_incoming(self._sock)
        if frame is not None and (reply := answer_for(frame, self.vip, self.mac)) is not None:
            self._sock.send(reply)
            self.answered += 1

    def close(self) -> None:
        self._sock.close()
