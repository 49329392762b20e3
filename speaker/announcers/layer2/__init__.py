"""Layer-2 announcing (ARP for IPv4, NDP for IPv6); the speaker's entry points are here.

The speaker builds the desired state with an InterfaceView (netlink) and interface_for, then
hands it to Layer2Announcer.sync; a VIP with no interface is the speaker's NoInterfaceForIP.
"""

from speaker.announcers.layer2.announcer import Layer2Announcer
from speaker.announcers.layer2.api import (
    BURST_INTERVAL,
    BURST_SPAN,
    Desired,
    HoldFailure,
    Layer2Hooks,
    ProbeResult,
)
from speaker.announcers.layer2.errors import AnnounceError
from speaker.announcers.layer2.frames import MacAddress, mac_address
from speaker.announcers.layer2.interfaces import Interface, IPAddress, Link, interface_for
from speaker.announcers.layer2.netlink import InterfaceView
from speaker.announcers.layer2.sockets import NamespaceRunner, current_namespace

__all__ = [
    "BURST_INTERVAL",
    "BURST_SPAN",
    "AnnounceError",
    "Desired",
    "HoldFailure",
    "IPAddress",
    "Interface",
    "InterfaceView",
    "Layer2Announcer",
    "Layer2Hooks",
    "Link",
    "MacAddress",
    "NamespaceRunner",
    "ProbeResult",
    "current_namespace",
    "interface_for",
    "mac_address",
]
