"""The one error type of the layer-2 announcer; raised by its socket and netlink shells."""

from __future__ import annotations


class AnnounceError(RuntimeError):
    """A socket or netlink operation failed; the message says what was being done, the cause
    is chained."""
