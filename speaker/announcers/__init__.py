"""Announcers: how a node makes the network deliver a VIP to it (layer2/: ARP and NDP; bgp/);
each is driven by the speaker with one verb, `sync(desired)`."""
