"""Node and EndpointSlice bodies -> model objects (NodeInfo, EndpointSliceInfo); for the speaker
and the CLI, re-exported by lbctl.core.adapt. Reading never raises: wrong types read as empty.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

from lbctl.core import annotations as ann
from lbctl.core.adapt_read import ip_or_none as _ip
from lbctl.core.adapt_read import items as _list
from lbctl.core.adapt_read import mapping as _map
from lbctl.core.adapt_read import pairs as _pairs
from lbctl.core.adapt_read import text as _text
from lbctl.core.model import IPAddress, NodeName, ServiceKey, service_key

T = TypeVar("T")


class Share(Protocol):
    """A value -> one shared copy of an equal value (adapt_endpointslice's `share`)."""

    def __call__(self, value: T, /) -> T: ...


# --- Nodes ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What the speaker and the CLI need of a Node."""

    name: NodeName
    labels: tuple[tuple[str, str], ...] = ()
    internal_ips: tuple[IPAddress, ...] = ()
    ready: bool = False  # condition Ready is "True" (Unknown and missing count as not ready)
    network_unavailable: bool = False  # condition NetworkUnavailable is "True"
    excluded: bool = False  # carries the exclude-from-external-load-balancers label
    out_of_service: bool = False  # tainted node.kubernetes.io/out-of-service (any effect)
    unschedulable: bool = False  # cordoned
    unreachable: bool = False  # tainted node.kubernetes.io/unreachable (any effect)

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


def _condition_true(status: Mapping[str, object], kind: str) -> bool:
    return any(
        _text(c, "type") == kind and _text(c, "status") == "True"
        for c in _list(status, "conditions")
    )


def adapt_node(body: Mapping[str, object]) -> NodeInfo:
    meta, spec, status = _map(body, "metadata"), _map(body, "spec"), _map(body, "status")
    labels, taints = _pairs(meta.get("labels")), _list(spec, "taints")
    internal: list[IPAddress] = []
    for entry in _list(status, "addresses"):
        text = _text(entry, "address") if _text(entry, "type") == "InternalIP" else None
        ip = _ip(text.strip()) if text else None
        if ip is not None and ip not in internal:
            internal.append(ip)
    return NodeInfo(
        name=NodeName(_text(meta, "name") or ""),
        labels=labels,
        internal_ips=tuple(internal),
        ready=_condition_true(status, "Ready"),
        network_unavailable=_condition_true(status, "NetworkUnavailable"),
        excluded=any(k == ann.EXCLUDE_FROM_LB_LABEL for k, _ in labels),
        out_of_service=any(_text(t, "key") == ann.OUT_OF_SERVICE_TAINT for t in taints),
        unschedulable=spec.get("unschedulable") is True,
        unreachable=any(_text(t, "key") == ann.UNREACHABLE_TAINT for t in taints),
    )


# --- EndpointSlices ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EndpointInfo:
    addresses: tuple[IPAddress, ...]
    node_name: NodeName | None
    ready: bool
    serving: bool
    terminating: bool


@dataclass(frozen=True, slots=True)
class EndpointSliceInfo:
    """One EndpointSlice, reduced to what announcing decisions need."""

    name: str
    service: ServiceKey | None  # None when the slice has no kubernetes.io/service-name label
    endpoints: tuple[EndpointInfo, ...] = ()

    def nodes_with(self, *, serving: bool = False) -> frozenset[NodeName]:
        """Nodes with a ready endpoint (or, with serving=True, a serving one)."""
        return frozenset(
            e.node_name
            for e in self.endpoints
            if e.node_name is not None and (e.serving if serving else e.ready)
        )


def _condition(conditions: Mapping[str, object], key: str, default: bool) -> bool:
    value = conditions.get(key)
    return value if isinstance(value, bool) else default


def _same(value: T) -> T:
    return value


def _endpoint(entry: object, addresses: bool) -> EndpointInfo:
    conditions = _map(entry, "conditions")
    # The API's rules for unset conditions: ready means true, serving defers to ready.
    ready = _condition(conditions, "ready", True)
    parsed = (_ip(a) for a in _list(entry, "addresses") if isinstance(a, str)) if addresses else ()
    node = _text(entry, "nodeName")
    return EndpointInfo(
        addresses=tuple(ip for ip in parsed if ip is not None),
        node_name=NodeName(node) if node else None,
        ready=ready,
        serving=_condition(conditions, "serving", ready),
        terminating=_condition(conditions, "terminating", False),
    )


def adapt_endpointslice(
    body: Mapping[str, object], *, addresses: bool = True, share: Share = _same
) -> EndpointSliceInfo:
    """`addresses=False` leaves every endpoint's addresses out (the speaker: no announcing
    decision reads them); `share` returns one shared copy of an equal value (the speaker's table,
    so that 10,000 slices of one ready endpoint on one node hold one EndpointInfo and one tuple
    of it, not 10,000 of each); it is given each endpoint and the endpoints' tuple."""
    meta = _map(body, "metadata")
    service = _text(_map(meta, "labels"), ann.SERVICE_NAME_LABEL)
    namespace = _text(meta, "namespace") or "default"
    endpoints = (share(_endpoint(e, addresses)) for e in _list(body, "endpoints"))
    return EndpointSliceInfo(
        name=_text(meta, "name") or "",
        service=service_key(namespace, service) if service else None,
        endpoints=share(tuple(endpoints)),
    )
