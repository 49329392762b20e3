"""Small pieces of the controller: conditions, the Event deduper, the config state, flags, plans."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from controller import conditions
from controller.config import ConfigState, parse_ref
from controller.events import Deduper, EventReason, EventType, ObjectRef
from controller.main import parser
from controller.observed import Desired, Observed, plan

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = datetime(2026, 1, 1, 0, 5, tzinfo=UTC)
ALLOCATED = conditions.Verdict(True, "Allocated", "assigned 192.0.2.1 from pool public")
EXHAUSTED = conditions.Verdict(False, "PoolExhausted", "pool public is full: 2/2 used")


def test_condition_keeps_transition_time_while_status_is_unchanged() -> None:
    first = conditions.build(EXHAUSTED, None, 1, T0)
    again = conditions.build(
        conditions.Verdict(False, "NoPoolMatches", "other words"), conditions.Shown.of(first), 2, T1
    )
    assert again["lastTransitionTime"] == first["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    flipped = conditions.build(ALLOCATED, conditions.Shown.of(again), 2, T1)
    assert flipped["lastTransitionTime"] == "2026-01-01T00:05:00Z"
    assert set(flipped) == {
        "type",
        "status",
        "observedGeneration",
        "lastTransitionTime",
        "reason",
        "message",
    }


@pytest.mark.parametrize(
    ("change", "current"),
    [({}, True), ({"message": "x"}, False), ({"observedGeneration": 2}, False)],
    ids=["same", "message", "generation"],
)
def test_condition_is_current_only_when_everything_matches(
    change: dict[str, object], current: bool
) -> None:
    existing = {**conditions.build(ALLOCATED, None, 1, T0), **change}
    assert conditions.up_to_date(conditions.Shown.of(existing), ALLOCATED, 1) is current


def test_long_messages_are_clipped() -> None:
    assert len(conditions.clip("x" * 5000)) == conditions.MAX_MESSAGE


def test_deduper_repeats_nothing_until_the_reason_changes() -> None:
    dedup = Deduper()
    ref = ObjectRef("Service", "ns", "web", "uid")
    offers = [
        dedup.offer(ref, EventType.WARNING, EventReason.POOL_EXHAUSTED, "full") for _ in range(20)
    ]
    assert sum(o is not None for o in offers) == 1
    assert dedup.offer(ref, EventType.NORMAL, EventReason.IP_ALLOCATED, "got one") is not None
    assert dedup.offer(ref, EventType.WARNING, EventReason.POOL_EXHAUSTED, "full") is not None
    dedup.forget("Service", "ns", "web")
    assert len(dedup) == 0


def test_config_state_tracks_content_not_resource_version() -> None:
    state = ConfigState("lbctl-system", "lbctl-config")
    body = {"metadata": {"resourceVersion": "1"}, "data": {"config": "x"}}
    assert state.is_new(body)
    state.read(body)
    assert not state.is_new({**body, "metadata": {"resourceVersion": "2"}})
    assert state.is_new(None)


@pytest.mark.parametrize("text", ["nope", "/x", "x/", "a/b/c"])
def test_config_map_reference_needs_namespace_and_name(text: str) -> None:
    with pytest.raises(ValueError, match="NAMESPACE/NAME"):
        parse_ref(text)


def test_flags() -> None:
    args = parser().parse_args(
        [
            "--config-map",
            "ops/pools",
            "--lb-class",
            "example.com/lb",
            "--metrics-bind-address",
            "127.0.0.1:0",
        ]
    )
    assert args.config_map == ("ops", "pools")
    assert args.lb_class == "example.com/lb"
    assert args.metrics_bind_address == ("127.0.0.1", 0)
    defaults = parser().parse_args([])
    assert defaults.config_map == ("lbctl-system", "lbctl-config")
    assert defaults.lb_class is None
    with pytest.raises(SystemExit):
        parser().parse_args(["--config-map", "bad"])


def _observed(**status: object) -> Observed:
    body = {
        "metadata": {"namespace": "ns", "name": "web", "resourceVersion": "7", "generation": 3},
        "spec": {"type": "LoadBalancer"},
        "status": status,
    }
    return Observed.of(body)


def test_plan_removes_ingress_with_null_and_condition_with_a_delete_directive() -> None:
    obs = _observed(
        loadBalancer={"ingress": [{"ip": "192.0.2.1"}]},
        conditions=[conditions.build(ALLOCATED, None, 3, T0), {"type": "speaker.io/Other"}],
    )
    write = plan(obs, Desired((), None, None), T1)
    assert write is not None
    assert write.resource_version == "7"
    assert write.status == {
        "loadBalancer": {"ingress": None},
        "conditions": [{"type": "lbctl.io/IPAllocated", "$patch": "delete"}],
    }
    assert write.annotations is None  # no annotation to remove


def test_plan_is_empty_when_the_service_already_shows_the_state() -> None:
    import ipaddress

    obs = _observed(
        loadBalancer={"ingress": [{"ip": "192.0.2.1"}]},
        conditions=[conditions.build(ALLOCATED, None, 3, T0)],
    )
    want = Desired((ipaddress.ip_address("192.0.2.1"),), ALLOCATED, None, keep_pool=True)
    assert plan(obs, want, T1) is None
