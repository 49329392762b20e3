"""Hypothesis: whatever YAML tree comes in, parse_document raises nothing but ConfigError.

A ParserCrash (a ConfigError standing for an unexpected exception inside a parser) fails these
tests too: the wrapper in parse.py is a safety net, not an excuse.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lbctl.core.model import ConfigError, ConfigFormat
from lbctl.core.parse import LBCTL_API_VERSION, ParserCrash, parse_document

FUZZ = settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Values near the rules' edges, so shaped trees reach deep checks, not only type errors.
INTERESTING = st.sampled_from(
    [
        "192.0.2.0/24", "192.0.2.0/28", "192.0.2.5/24", "192.0.2.1", "192.0.2.10-192.0.2.1",
        "192.0.2.1 - 192.0.2.9", "198.51.100.0/31", "2001:db8::/64", "2001:db8::1",
        "2001:db8::1-2001:db8::ff", "fe80::1%eth0", "0.0.0.0/0", "::/0", "10.0.0.300/32",
        "90s", "2s", "0", "1m30s", "500ms", "99999999999999999999h", "64500:1", "65536:1",
        "large:1:2:3", "1:2:3", "no-advertise", "layer2", "bgp", "In", "NotIn", "Exists",
        "DoesNotExist", "rack", "a/b", "", " ", "a\nb", "x" * 90, LBCTL_API_VERSION,
        0, 1, 2, 3, 24, 32, 33, 64, 128, 129, 179, 254, 255, 65535, 65536, 64500, 4294967295,
        4294967296, -1, 10**40, True, False, None, 1.5, float("nan"), float("inf"),
    ]
)  # fmt: skip
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12), INTERESTING
)
KEYS = st.one_of(st.text(max_size=12), st.integers(), st.booleans(), st.none(), INTERESTING)
GARBAGE = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=25,
)
LEAF = INTERESTING | SCALARS | GARBAGE


def shaped(schema: Any) -> st.SearchStrategy[object]:
    """Trees shaped like `schema` (dict: optional keys, [x]: list of x, None: a leaf), where any
    node may instead be garbage and any mapping may carry an extra random key."""
    if schema is None:
        return LEAF
    if isinstance(schema, list):
        return st.lists(shaped(schema[0]), max_size=3) | GARBAGE
    fields = {key: shaped(value) for key, value in schema.items()}
    mapping = st.fixed_dictionaries({}, optional=fields)
    with_extra = st.tuples(mapping, KEYS, LEAF).map(lambda t: {**t[0], t[1]: t[2]})
    return st.one_of(mapping, mapping, with_extra, GARBAGE)


def keys(*names: str, **nested: Any) -> dict[str, Any]:
    return dict.fromkeys(names) | nested


M_SELECTOR = keys("match-labels", **{"match-expressions": [keys("key", "operator", "values")]})
METALLB = keys(
    "bgp-communities",
    peers=[
        keys(
            "peer-address", "peer-asn", "my-asn", "peer-port", "hold-time", "keepalive-time",
            "router-id", "source-address", "password", "ebgp-multihop", "bfd-profile",
            **{"node-selectors": [M_SELECTOR]},
        )
    ],
    **{
        "address-pools": [
            keys(
                "name", "protocol", "auto-assign", "avoid-buggy-ips",
                addresses=[None],
                **{
                    "bgp-advertisements": [
                        keys("aggregation-length", "aggregation-length-v6", "localpref",
                             communities=[None])
                    ]
                },
            )
        ],
        "bfd-profiles": [
            keys(
                "name", "receive-interval", "transmit-interval", "detect-multiplier",
                "echo-interval", "echo-mode", "passive-mode", "minimum-ttl",
            )
        ],
    },
)  # fmt: skip

L_SELECTOR = keys("matchLabels", matchExpressions=[keys("key", "operator", "values")])
LBCTL = keys(
    "kind", "allowRenumber", "communities",
    pools=[
        keys(
            "name", "autoAssign", "avoidBuggyIPs",
            addresses=[None],
            serviceAllocation=keys(
                "priority", "namespaces",
                namespaceSelectors=[L_SELECTOR], serviceSelectors=[L_SELECTOR],
            ),
        )
    ],
    l2Advertisements=[keys("name", "pools", "interfaces", nodeSelectors=[L_SELECTOR])],
    bgpAdvertisements=[
        keys(
            "name", "pools", "aggregationLength", "aggregationLengthV6", "localPref",
            "communities", "peers", nodeSelectors=[L_SELECTOR],
        )
    ],
    bgpPeers=[
        keys(
            "name", "myASN", "peerASN", "address", "port", "holdTime", "keepaliveTime",
            "routerID", "sourceAddress", "ebgpMultiHop",
            nodeSelectors=[L_SELECTOR], passwordSecret=keys("name", "namespace", "key"),
        )
    ],
)  # fmt: skip


def with_lbctl_api_version(doc: object) -> object:
    return {**doc, "apiVersion": LBCTL_API_VERSION} if isinstance(doc, dict) else doc


def parses_or_config_error(doc: object, fmt: ConfigFormat | None = None) -> None:
    try:
        parse_document(doc, fmt=fmt, where="fuzz")
    except ParserCrash as err:
        raise AssertionError(f"parser crashed on {doc!r}") from err.cause
    except ConfigError as err:
        assert err.issues, "a ConfigError must carry at least one issue"


@FUZZ
@given(GARBAGE)
def test_random_tree_never_escapes_config_error(doc: object) -> None:
    parses_or_config_error(doc)
    parses_or_config_error(doc, ConfigFormat.METALLB)


@FUZZ
@given(shaped(METALLB))
def test_metallb_shaped_tree_never_escapes_config_error(doc: object) -> None:
    parses_or_config_error(doc)


@FUZZ
@given(shaped(LBCTL).map(with_lbctl_api_version))
def test_lbctl_shaped_tree_never_escapes_config_error(doc: object) -> None:
    pytest.importorskip("lbctl.core.parse_lbctl")
    parses_or_config_error(doc)


@FUZZ
@given(GARBAGE)
def test_random_tree_as_lbctl_never_escapes_config_error(doc: object) -> None:
    pytest.importorskip("lbctl.core.parse_lbctl")
    parses_or_config_error(with_lbctl_api_version(doc), ConfigFormat.LBCTL)
