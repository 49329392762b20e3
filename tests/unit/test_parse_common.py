"""Shared config readers (lbctl.core.parse_common): values, paths, selectors, overlaps, messages."""

from __future__ import annotations

import ipaddress
import time

import pytest

from lbctl.core.model import (
    AddressRange,
    Community,
    CommunityKind,
    Config,
    ConfigError,
    LabelSelector,
    SelectorOperator,
    SelectorRequirement,
    Severity,
)
from lbctl.core.parse_common import (
    KEBAB_KEYS,
    Issues,
    at,
    cidr_prefix_len,
    object_where,
    parse_address_range,
    parse_community,
    parse_duration,
)

ip = ipaddress.ip_address


def messages(issues: Issues) -> list[str]:
    return [str(i) for i in issues.errors]


# --- paths ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "key", "expected"),
    [
        ("", "address-pools", "address-pools"),
        ("address-pools", 3, "address-pools[3]"),
        ("address-pools[3]", "name", "address-pools[3].name"),
        ('pool "a"', "addresses", 'pool "a": addresses'),
        ('pool "a": addresses', 1, 'pool "a": addresses[1]'),
        ('pool "a"', "odd key", 'pool "a": "odd key"'),
        ("bgp-communities", "my alias", 'bgp-communities["my alias"]'),
        ("", "a\nb", '"a\\nb"'),
    ],
    ids=[
        "top-level",
        "index",
        "field-after-index",
        "field-after-object",
        "index-after-field",
        "odd-key-after-object",
        "odd-key-after-field",
        "control-character-escaped",
    ],
)
def test_at_builds_object_then_field_path(where: str, key: str | int, expected: str) -> None:
    assert at(where, key) == expected


def test_object_where_falls_back_to_position_for_unusable_names() -> None:
    assert object_where("pool", "public", "address-pools[0]") == 'pool "public"'
    assert object_where("pool", 7, "address-pools[0]") == "address-pools[0]"
    assert object_where("pool", "", "address-pools[0]") == "address-pools[0]"
    assert object_where("pool", "a\nb", "address-pools[0]") == "address-pools[0]"


# --- address entries ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "first", "last"),
    [
        ("192.0.2.0/24", "192.0.2.0", "192.0.2.255"),
        ("192.0.2.7", "192.0.2.7", "192.0.2.7"),
        ("192.0.2.10-192.0.2.20", "192.0.2.10", "192.0.2.20"),
        (" 192.0.2.10 - 192.0.2.20 ", "192.0.2.10", "192.0.2.20"),
        ("192.0.2.5-192.0.2.5", "192.0.2.5", "192.0.2.5"),
        ("2001:db8::/64", "2001:db8::", "2001:db8::ffff:ffff:ffff:ffff"),
        ("2001:db8::1", "2001:db8::1", "2001:db8::1"),
        ("2001:db8::1-2001:db8::ff", "2001:db8::1", "2001:db8::ff"),
        ("10.0.0.0/8", "10.0.0.0", "10.255.255.255"),
    ],
    ids=[
        "cidr",
        "single-ipv4-is-slash-32",
        "range",
        "range-spaces-trimmed",
        "range-of-one",
        "ipv6-cidr",
        "single-ipv6-is-slash-128",
        "ipv6-range",
        "slash-8",
    ],
)
def test_address_entry_parses(text: str, first: str, last: str) -> None:
    r, warning = parse_address_range(text)
    assert (r.first, r.last, r.text, warning) == (ip(first), ip(last), text, None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10.0.0.9-10.0.0.3", '"10.0.0.9-10.0.0.3": start after end'),
        ("192.0.2.1-2001:db8::1", '"192.0.2.1-2001:db8::1": mixes IPv4 and IPv6'),
        ("1.2.3.4-1.2.3.5-1.2.3.6", '"1.2.3.4-1.2.3.5-1.2.3.6": not a CIDR, range or IP address'),
        ("1.2.3.4-x", '"1.2.3.4-x": not an IP address range'),
        ("192.0.2.0/33", '"192.0.2.0/33": not a valid CIDR'),
        ("10.0.0.300/32", '"10.0.0.300/32": not a valid CIDR'),
        ("192.0.2.1/x", '"192.0.2.1/x": not a valid CIDR'),
        ("banana", '"banana": not a CIDR, range or IP address'),
        ("", '"": not a CIDR, range or IP address'),
        ("192.0.2.01", '"192.0.2.01": not a CIDR, range or IP address'),
        ("fe80::1%eth0", '"fe80::1%eth0": zone index not allowed'),
    ],
    ids=[
        "start-after-end",
        "mixed-families",
        "three-part-range",
        "range-bad-address",
        "prefix-too-long",
        "bad-octet",
        "prefix-not-a-number",
        "garbage",
        "empty",
        "leading-zero",
        "zone-index",
    ],
)
def test_address_entry_rejected_with_message(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=r".*") as err:
        parse_address_range(text)
    assert str(err.value) == message


def test_cidr_with_host_bits_means_its_network_and_warns() -> None:
    issues = Issues()
    r = issues.address_range("192.0.2.5/24", 'pool "a": addresses[0]')
    assert r == AddressRange(ip("192.0.2.0"), ip("192.0.2.255"))
    assert [str(w) for w in issues.warnings] == [
        'warning: pool "a": addresses[0]: "192.0.2.5/24": host bits set; this means 192.0.2.0/24'
    ]
    assert not issues.errors


def test_cidr_prefix_len_only_for_cidr_entries() -> None:
    assert cidr_prefix_len(parse_address_range("192.0.2.0/26")[0]) == 26
    assert cidr_prefix_len(parse_address_range("192.0.2.1-192.0.2.9")[0]) is None


# --- durations, communities ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90.0), ("1m30s", 90.0), ("0", 0.0), ("0s", 0.0), ("1.5h", 5400.0), ("500ms", 0.5)],
    ids=["seconds", "minutes-and-seconds", "bare-zero", "zero-seconds", "fraction", "millis"],
)
def test_duration_parses_like_go(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    ["90", "", "-1s", "1 m", "s", "1d", "1m 30s", "1e3s"],
    ids=["no-unit", "empty", "negative", "space", "unit-only", "days", "inner-space", "exponent"],
)
def test_duration_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration like"):
        parse_duration(text)


def test_duration_out_of_range_rejected() -> None:
    with pytest.raises(ValueError, match="duration out of range"):
        parse_duration("9" * 30 + "h")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("64500:1", Community(CommunityKind.STANDARD, (64500, 1))),
        ("0:0", Community(CommunityKind.STANDARD, (0, 0))),
        ("65535:65535", Community(CommunityKind.STANDARD, (65535, 65535))),
        ("large:4200000000:1:2", Community(CommunityKind.LARGE, (4200000000, 1, 2))),
        ("4294967295:0:1", Community(CommunityKind.LARGE, (4294967295, 0, 1))),
    ],
    ids=["standard", "zero", "max-16-bit", "large-prefixed", "large-bare-max-32-bit"],
)
def test_community_parses(text: str, expected: Community) -> None:
    assert parse_community(text) == expected


@pytest.mark.parametrize(
    ("text", "large", "message"),
    [
        ("65536:1", True, '"65536:1": 65536 is out of range 0..65535'),
        ("1:4294967296:1", True, '"1:4294967296:1": 4294967296 is out of range 0..4294967295'),
        ("1:-2", True, '"1:-2": "-2" is not a number'),
        ("1: 2", True, '"1: 2": " 2" is not a number'),
        ("1:", True, '"1:": "" is not a number'),
        ("1:2:3:4", True, '"1:2:3:4": not a community ("A:B" or "large:A:B:C") or alias'),
        ("large:1:2", True, '"large:1:2": not a community ("A:B" or "large:A:B:C") or alias'),
        ("1:2:3", False, '"1:2:3": large communities are not supported in this format'),
    ],
    ids=[
        "standard-half-over-16-bits",
        "large-part-over-32-bits",
        "negative",
        "space",
        "empty-part",
        "four-parts",
        "large-prefix-two-parts",
        "large-when-format-has-none",
    ],
)
def test_community_rejected(text: str, large: bool, message: str) -> None:
    with pytest.raises(ValueError, match=r".*") as err:
        parse_community(text, allow_large=large)
    assert str(err.value) == message


def test_community_alias_resolves_and_unknown_alias_is_an_error() -> None:
    issues = Issues()
    aliases = issues.community_aliases({"c": {"vpn": "64500:7"}}, "c", "")
    assert issues.community("vpn", "x", aliases) == Community(CommunityKind.STANDARD, (64500, 7))
    assert issues.community("nope", "x", aliases) is None
    assert messages(issues) == ['x: "nope": unknown community alias']


# --- typed getters ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("getter", "value", "message"),
    [
        ("get_str", 5, "must be a string, not an integer"),
        ("get_int", "5", "must be an integer, not a string"),
        ("get_int", True, "must be an integer, not a boolean"),
        ("get_int", 5.0, "must be an integer, not a number"),
        ("get_bool", "true", "must be a boolean (true or false), not a string"),
        ("get_list", {"a": 1}, "must be a list, not a mapping"),
        ("get_map", [1], "must be a mapping, not a list"),
        ("get_duration", 90, "must be a string, not an integer"),
        ("get_ip", "nope", '"nope": not an IP address'),
        ("get_asn", 0, "0: must be in 1..4294967295"),
        ("get_asn", 4294967296, "4294967296: must be in 1..4294967295"),
    ],
    ids=[
        "str-given-int",
        "int-given-str",
        "int-given-bool",
        "int-given-float",
        "bool-given-str",
        "list-given-mapping",
        "mapping-given-list",
        "duration-given-int",
        "ip-given-garbage",
        "asn-zero",
        "asn-over-32-bits",
    ],
)
def test_getter_records_wrong_value_with_field_path(
    getter: str, value: object, message: str
) -> None:
    issues = Issues()
    assert getattr(issues, getter)({"f": value}, "f", 'pool "a"') is None
    assert messages(issues) == [f'pool "a": f: {message}']


def test_getter_absent_or_null_means_not_set_unless_required() -> None:
    issues = Issues()
    assert issues.get_int({"f": None}, "f", "o") is None
    assert issues.get_str({}, "f", "o") is None
    assert not issues.errors
    assert issues.get_str({}, "f", 'pool "a"', required=True) is None
    assert messages(issues) == ['pool "a": f: is required']


def test_wrong_type_messages_never_repeat_the_value() -> None:
    issues = Issues()
    issues.get_str({"password": 271828}, "password", "peer")
    issues.get_bool({"x": "hunter2"}, "x", "peer")
    assert all("271828" not in m and "hunter2" not in m for m in messages(issues))


def test_reject_unknown_names_each_key_with_a_hint() -> None:
    issues = Issues()
    issues.reject_unknown(
        {"name": 1, "auto-asign": 1, 7: 1, "zzz": 1}, ("name", "auto-assign"), "p"
    )
    assert messages(issues) == [
        'p.auto-asign: unknown field (did you mean "auto-assign"?)',
        "p.7: unknown field",
        "p.zzz: unknown field",
    ]


def test_prefix_names_the_source_before_every_issue() -> None:
    issues = Issues('configmap lbctl-system/lbctl-config: data["config"]')
    issues.error('pool "a": addresses[0]', "bad")
    issues.error("", "not a mapping")
    assert messages(issues) == [
        'configmap lbctl-system/lbctl-config: data["config"]: pool "a": addresses[0]: bad',
        'configmap lbctl-system/lbctl-config: data["config"]: not a mapping',
    ]


def test_finish_raises_every_error_or_returns_warnings() -> None:
    issues = Issues()
    issues.warn("w", "careful")
    parsed = issues.finish(Config())
    assert [i.severity for i in parsed.warnings] == [Severity.WARNING]
    issues.error("a", "one")
    issues.error("b", "two")
    with pytest.raises(ConfigError) as err:
        issues.finish(Config())
    assert [str(i) for i in err.value.issues] == ["a: one", "b: two"]


# --- selectors ----------------------------------------------------------------------------------


def test_selector_reads_labels_and_expressions_in_either_key_style() -> None:
    issues = Issues()
    kebab = {
        "match-labels": {"rack": "r1", "example.com/zone": "z1"},
        "match-expressions": [
            {"key": "role", "operator": "In", "values": ["edge", "core"]},
            {"key": "gpu", "operator": "DoesNotExist"},
        ],
    }
    camel = {"matchLabels": kebab["match-labels"], "matchExpressions": kebab["match-expressions"]}
    expected = LabelSelector(
        match_labels=(("example.com/zone", "z1"), ("rack", "r1")),
        match_expressions=(
            SelectorRequirement("role", SelectorOperator.IN, ("edge", "core")),
            SelectorRequirement("gpu", SelectorOperator.DOES_NOT_EXIST),
        ),
    )
    assert issues.selector(kebab, "s", KEBAB_KEYS) == expected
    assert issues.selector(camel, "s") == expected
    assert not issues.errors


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        ({"matchLabels": {"rack": 1}}, "s.matchLabels.rack: label keys and values must be strings"),
        ({"matchLabels": {"a b": "x"}}, 's.matchLabels["a b"]: "a b": not a valid label key'),
        (
            {"matchLabels": {"r": "x" * 64}},
            f's.matchLabels.r: "{"x" * 64}": not a valid label value',
        ),
        (
            {"matchExpressions": [{"key": "r", "operator": "Exists", "values": ["a"]}]},
            "s.matchExpressions[0].values: operator Exists takes no values",
        ),
        (
            {"matchExpressions": [{"key": "r", "operator": "In"}]},
            "s.matchExpressions[0].values: operator In needs at least one value",
        ),
        (
            {"matchExpressions": [{"key": "r", "operator": "Has"}]},
            's.matchExpressions[0].operator: "Has": must be one of In, NotIn, Exists, DoesNotExist',
        ),
        ({"match-labels": {}}, 's.match-labels: unknown field (did you mean "matchLabels"?)'),
    ],
    ids=[
        "label-value-not-string",
        "label-key-invalid",
        "label-value-too-long",
        "exists-takes-no-values",
        "in-needs-values",
        "unknown-operator",
        "wrong-key-style",
    ],
)
def test_selector_rejected_with_message(selector: object, message: str) -> None:
    issues = Issues()
    assert issues.selector(selector, "s") is None
    assert messages(issues) == [message]


# --- whole-document checks ----------------------------------------------------------------------


def ranges(*texts: str) -> list[tuple[str, AddressRange]]:
    return [(f"r{i}", parse_address_range(t)[0]) for i, t in enumerate(texts)]


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        (("192.0.2.0/25", "192.0.2.128/25"), []),
        (("192.0.2.0/24", "192.0.2.255"), ['r1: "192.0.2.255" overlaps r0 ("192.0.2.0/24")']),
        (
            ("192.0.2.10-192.0.2.20", "192.0.2.0-192.0.2.10"),
            ['r0: "192.0.2.10-192.0.2.20" overlaps r1 ("192.0.2.0-192.0.2.10")'],
        ),
        (
            ("192.0.2.0/24", "2001:db8::/64", "2001:db8::1"),
            ['r2: "2001:db8::1" overlaps r1 ("2001:db8::/64")'],
        ),
        (("0.0.0.0/32", "::/128"), []),
        (
            ("192.0.2.0/24", "192.0.2.1", "192.0.2.200"),
            [
                'r1: "192.0.2.1" overlaps r0 ("192.0.2.0/24")',
                'r2: "192.0.2.200" overlaps r0 ("192.0.2.0/24")',
            ],
        ),
    ],
    ids=[
        "adjacent-ok",
        "single-ip-at-edge",
        "shared-endpoint",
        "ipv6",
        "families-never-overlap",
        "nested-each-reported",
    ],
)
def test_overlaps_reported_against_the_covering_range(
    texts: tuple[str, ...], expected: list[str]
) -> None:
    issues = Issues()
    issues.check_overlaps(ranges(*texts))
    assert messages(issues) == expected


def test_overlap_check_is_n_log_n_on_many_ranges() -> None:
    # 100,000 disjoint /32s plus one overlapping at the end: a pairwise check would do 5e9 steps.
    entries = [
        (f"r{i}", AddressRange(ip(167772160 + 2 * i), ip(167772160 + 2 * i)))
        for i in range(100_000)
    ]
    entries.append(("last", AddressRange(ip(167772160), ip(167772160))))
    issues = Issues()
    started = time.perf_counter()
    issues.check_overlaps(entries)
    assert time.perf_counter() - started < 5.0
    assert len(issues.errors) == 1


def test_duplicates_name_the_first_occurrence() -> None:
    issues = Issues()
    issues.check_unique([("p[0]", "a"), ("p[1]", "b"), ("p[2]", "a"), ("p[3]", "a")], "pool name")
    assert messages(issues) == [
        'p[2]: duplicate pool name "a" (first at p[0])',
        'p[3]: duplicate pool name "a" (first at p[0])',
    ]
