"""The speaker's slice index and sharing table (speaker/indexes.py): the index answers what a
dict of slices grouped by Service would, and equal records are one object."""

from __future__ import annotations

import random
from typing import Any

from lbctl.core.adapt import EndpointSliceInfo, adapt_endpointslice
from lbctl.core.model import ServiceKey
from speaker.indexes import Sharing, SliceIndex


def body(name: str, service: str | None, node: str, *, ready: bool = True) -> dict[str, Any]:
    labels = {} if service is None else {"kubernetes.io/service-name": service}
    return {
        "metadata": {"namespace": "ns", "name": name, "labels": labels},
        "endpoints": [
            {"addresses": ["198.51.100.2"], "nodeName": node, "conditions": {"ready": ready}}
        ],
    }


def test_the_index_groups_slices_by_service_as_they_come_go_and_move() -> None:
    rng = random.Random(3)
    index, plain = SliceIndex(), {}
    for _ in range(500):
        name = f"s{rng.randrange(8)}"
        if rng.random() < 0.2:
            index.put("ns", name, None)
            plain.pop(name, None)
            continue
        service = rng.choice(["a", "b", "c", None])
        info = adapt_endpointslice(body(name, service, rng.choice(["n1", "n2"])))
        old = index.put("ns", name, info)
        plain[name] = old if old == info else info  # an equal slice keeps its record
        grouped: dict[ServiceKey, set[EndpointSliceInfo]] = {}
        for i in plain.values():
            if i.service is not None:
                grouped.setdefault(i.service, set()).add(i)
        assert {k: set(v) for k, v in index.items()} == grouped
        assert sorted(map(id, index.every())) == sorted(map(id, plain.values()))


def test_an_equal_slice_again_keeps_the_record_and_returns_it() -> None:
    index = SliceIndex()
    first = adapt_endpointslice(body("s", "a", "n1"))
    index.put("ns", "s", first)
    assert index.put("ns", "s", adapt_endpointslice(body("s", "a", "n1"))) is first
    assert index[ServiceKey("ns/a")][0] is first


def test_slices_read_for_the_speaker_share_their_endpoints_and_keep_no_addresses() -> None:
    share = Sharing()
    one, two = (
        adapt_endpointslice(body(n, n, "n1"), addresses=False, share=share) for n in ("x", "y")
    )
    assert one.endpoints is two.endpoints
    assert one.endpoints[0].addresses == ()
    assert one.endpoints[0].node_name == "n1"
    assert adapt_endpointslice(body("z", "z", "n1")).endpoints[0].addresses != ()


def test_a_full_sharing_table_starts_afresh_and_still_returns_equal_values() -> None:
    share = Sharing(limit=2)
    assert [share(x) for x in ("a", "b", "c", "a")] == ["a", "b", "c", "a"]
    assert len(share._seen) == 2
