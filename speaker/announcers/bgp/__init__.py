"""The BGP announcer: one supervised ExaBGP per peer session, driven over its process API with
commands built only from typed values (speaker/announcers/bgp/render.py)."""

from speaker.announcers.bgp.announcer import BGPAnnouncer
from speaker.announcers.bgp.api import BGPHooks, RestartReason

__all__ = ["BGPAnnouncer", "BGPHooks", "RestartReason"]
