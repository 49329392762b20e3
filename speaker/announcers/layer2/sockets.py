"""The layer-2 announcer's sockets: one AF_PACKET socket per interface that receives only ARP and
NDP frames, and IPv6 group memberships for the VIPs' solicited-node groups; used by announcer."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import socket
import struct
from collections.abc import Callable
from ipaddress import IPv6Address
from typing import Protocol, TypeVar

from speaker.announcers.layer2.errors import AnnounceError
from speaker.announcers.layer2.frames import (
    ETH_P_ARP,
    ETH_P_IPV6,
    ICMPV6,
    ND_NA,
    ND_NS,
    solicited_node,
)
from speaker.announcers.layer2.interfaces import Link

SocketT = TypeVar("SocketT")

ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26  # asm-generic/socket.h
SOL_PACKET = 263  # linux/socket.h (the socket module has it on Linux, typeshed does not)
PACKET_IGNORE_OUTGOING = 23  # linux/if_packet.h, Linux 4.20: our own sends never come back
PACKET_OUTGOING = 4  # sll_pkttype of a frame this host sent (older kernels still deliver it)
RECEIVE_BATCH = 256  # frames read per wake-up, so one busy interface can't starve the loop
MAX_FRAME = 2048

# Classic BPF (linux/filter.h): accept ARP, and ICMPv6 NS/NA without extension headers (as
# RFC 4861 sends them); drop everything else in the kernel, before Python sees it.
_LD_H_ABS, _LD_B_ABS = 0x28, 0x30
_JEQ, _JGE, _JGT = 0x15, 0x35, 0x25
_RET = 0x06
_ACCEPT, _DROP = 0x40000, 0
_FILTER = [
    (_LD_H_ABS, 0, 0, 12),  # 0: ethertype
    (_JEQ, 6, 0, ETH_P_ARP),  # 1: ARP -> accept
    (_JEQ, 0, 6, ETH_P_IPV6),  # 2: not IPv6 -> drop
    (_LD_B_ABS, 0, 0, 20),  # 3: IPv6 next header
    (_JEQ, 0, 4, ICMPV6),  # 4: not ICMPv6 -> drop
    (_LD_B_ABS, 0, 0, 54),  # 5: ICMPv6 type
    (_JGE, 0, 2, ND_NS),  # 6: below NS -> drop
    (_JGT, 1, 0, ND_NA),  # 7: above NA -> drop
    (_RET, 0, 0, _ACCEPT),  # 8
    (_RET, 0, 0, _DROP),  # 9
]


class NamespaceRunner(Protocol):
    """Calls a socket-making function in the network namespace the sockets must live in.

    The speaker runs inside its node's namespace and passes nothing (`current_namespace`);
    tests that run announcers for several nodes in one process pass a runner that enters one.
    """

    def __call__(self, make: Callable[[], SocketT]) -> SocketT: ...


class FrameSocket(Protocol):
    """What the announcer needs of an interface's socket (PacketSocket; a fake in unit tests)."""

    @property
    def link(self) -> Link: ...

    def fileno(self) -> int: ...

    def send(self, frame: bytes) -> None: ...

    def receive(self, limit: int = RECEIVE_BATCH) -> list[bytes]: ...

    def join(self, vip: IPv6Address) -> None: ...

    def leave(self, vip: IPv6Address) -> None: ...

    def close(self) -> None: ...


def current_namespace(make: Callable[[], SocketT]) -> SocketT:
    return make()


def _attach_filter(sock: socket.socket) -> None:
    program = b"".join(struct.pack("HBBI", *insn) for insn in _FILTER)
    buffer = ctypes.create_string_buffer(program)
    fprog = struct.pack("HL", len(_FILTER), ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def _open_packet_socket(ifname: str) -> socket.socket:
    # Protocol 0 receives nothing until bind(), so no frame slips in before the filter.
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        _attach_filter(sock)
        with contextlib.suppress(OSError):  # before Linux 4.20: receive() drops them instead
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        sock.bind((ifname, ETH_P_ALL))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class PacketSocket:
    """One interface's ARP/NDP socket: non-blocking, read by the owner's event loop."""

    def __init__(
        self, link: Link, sock: socket.socket, in_netns: NamespaceRunner = current_namespace
    ) -> None:
        self._link = link
        self._sock = sock
        self._in_netns = in_netns  # where the membership socket is made
        # IPv6 memberships, on sockets made as needed: the kernel charges each membership to
        # its socket's option memory (net.core.optmem_max: 128 KiB here, ~2,700 groups), so
        # 10,000 VIPs need several; each group is left on the socket that joined it.
        self._groups: list[socket.socket] = []
        self._joined_on: dict[IPv6Address, socket.socket] = {}
        # VIPs per solicited-node group: VIPs alike in their low 24 bits share one membership.
        self._group_vips: dict[IPv6Address, set[IPv6Address]] = {}

    @classmethod
    def open(cls, link: Link, in_netns: NamespaceRunner = current_namespace) -> PacketSocket:
        try:
            sock = in_netns(lambda: _open_packet_socket(link.name))
        except OSError as err:
            raise AnnounceError(f"opening ARP/NDP socket on {link.name!r}: {err}") from err
        return cls(link, sock, in_netns)

    @property
    def link(self) -> Link:
        return self._link

    def fileno(self) -> int:
        return self._sock.fileno()

    def send(self, frame: bytes) -> None:
        try:
            self._sock.send(frame)
        except OSError as err:
            raise AnnounceError(f"sending a {len(frame)}-byte frame on {self.link.name!r}") from err

    def receive(self, limit: int = RECEIVE_BATCH) -> list[bytes]:
        """Frames waiting now (at most `limit`), without our own outgoing ones."""
        frames: list[bytes] = []
        while len(frames) < limit:
            try:
                data, address = self._sock.recvfrom(MAX_FRAME)
            except BlockingIOError:
                break
            except OSError as err:  # e.g. ENETDOWN while the link is down
                raise AnnounceError(f"reading frames on {self.link.name!r}") from err
            if address[2] != PACKET_OUTGOING:
                frames.append(data)
        return frames

    def join(self, vip: IPv6Address) -> None:
        """Join the VIP's solicited-node group: the NIC then accepts its NS, and the MLD report
        tells snooping switches to forward them here."""
        group, _ = solicited_node(vip)
        if group not in self._group_vips:
            self._join(group, vip)
        self._group_vips.setdefault(group, set()).add(vip)

    def leave(self, vip: IPv6Address) -> None:
        group, _ = solicited_node(vip)
        vips = self._group_vips.get(group, set())
        vips.discard(vip)
        if not vips and self._group_vips.pop(group, None) is not None:
            on = self._joined_on.pop(group, None)
            if on is not None:
                self._membership(on, socket.IPV6_LEAVE_GROUP, group, vip, "leaving")

    def _join(self, group: IPv6Address, vip: IPv6Address) -> None:
        """On the newest membership socket; on a new one when that one is full (ENOMEM)."""
        for fresh in (False, True):
            if fresh or not self._groups:
                try:
                    made = self._in_netns(lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM))
                except OSError as err:
                    raise AnnounceError(f"a membership socket on {self.link.name!r}") from err
                self._groups.append(made)
            try:
                self._membership(self._groups[-1], socket.IPV6_JOIN_GROUP, group, vip, "joining")
            except AnnounceError as err:
                if (
                    fresh
                    or not isinstance(err.__cause__, OSError)
                    or err.__cause__.errno not in (errno.ENOMEM, errno.ENOBUFS)
                ):
                    raise
                continue
            self._joined_on[group] = self._groups[-1]
            return

    def _membership(
        self, on: socket.socket, option: int, group: IPv6Address, vip: IPv6Address, doing: str
    ) -> None:
        try:
            request = group.packed + struct.pack("@I", self.link.index)
            on.setsockopt(socket.IPPROTO_IPV6, option, request)
        except OSError as err:
            raise AnnounceError(
                f"{doing} solicited-node group {group} for {vip} on {self.link.name!r}"
            ) from err

    def close(self) -> None:
        self._sock.close()
        for on in self._groups:
            on.close()  # leaves every group it joined
        self._groups.clear()
        self._joined_on.clear()
        self._group_vips.clear()
