"""ConfigMap bodies and YAML streams -> ParsedConfig or ConfigError naming the ConfigMap and key."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from lbctl.configmap import StrictLoader, load_configmap, load_documents, load_text
from lbctl.core.model import ConfigError, ConfigFormat, ParsedConfig, Severity

METALLB = "address-pools:\n- name: default\n  protocol: layer2\n  addresses: [192.0.2.0/28]\n"
LBCTL = (
    "apiVersion: lbctl.io/v1alpha1\nkind: Config\n"
    "pools:\n- name: default\n  addresses: [192.0.2.0/28]\n"
    "l2Advertisements:\n- name: all\n"
)


def configmap(data: Any, namespace: str | None = "lbctl-system") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "lbctl-config"}
    if namespace is not None:
        meta["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def error_lines(body: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_configmap(body)
    return [str(issue) for issue in caught.value.issues]


@pytest.mark.parametrize(
    ("key", "text", "fmt"),
    [
        pytest.param("config", METALLB, ConfigFormat.METALLB, id="key-config-is-metallb"),
        pytest.param("config.yaml", LBCTL, ConfigFormat.LBCTL, id="key-config.yaml-is-lbctl"),
    ],
)
def test_the_data_key_picks_the_format(key: str, text: str, fmt: ConfigFormat) -> None:
    parsed = load_configmap(configmap({key: text}))
    assert parsed.config.source_format is fmt
    assert [p.name for p in parsed.config.pools] == ["default"]


def test_metallb_text_under_the_lbctl_key_is_read_as_lbctl_format() -> None:
    lines = error_lines(configmap({"config.yaml": METALLB}))
    assert all(
        line.startswith('configmap lbctl-system/lbctl-config: data["config.yaml"]')
        for line in lines
    )


BROKEN = [
    pytest.param(
        configmap({"config": "address-pools:\n- name: a\n  protocol: layer2\n   addresses: []\n"}),
        'configmap lbctl-system/lbctl-config: data["config"]: line 4, column 13: invalid YAML: '
        "mapping values are not allowed here",
        id="yaml-syntax-error-names-configmap-key-and-line",
    ),
    pytest.param(
        configmap({"config": "- 192.0.2.0/24\n"}),
        'configmap lbctl-system/lbctl-config: data["config"]: '
        "the document is a list, not a mapping",
        id="document-not-a-mapping",
    ),
    pytest.param(
        configmap({"config": "just words"}),
        'configmap lbctl-system/lbctl-config: data["config"]: '
        "the document is a string, not a mapping",
        id="document-a-scalar",
    ),
    pytest.param(
        configmap({"config.yaml": ""}),
        'configmap lbctl-system/lbctl-config: data["config.yaml"]: the document is empty',
        id="empty-document",
    ),
    pytest.param(
        configmap({"config": "a: 1\n---\nb: 2\n"}),
        'configmap lbctl-system/lbctl-config: data["config"]: line 2, column 1: invalid YAML: '
        "expected a single document in the stream, but found another document",
        id="two-documents-in-one-key",
    ),
    pytest.param(
        configmap({"config": "address-pools: []\naddress-pools: []\n"}),
        'configmap lbctl-system/lbctl-config: data["config"]: line 2, column 1: invalid YAML: '
        "found duplicate key 'address-pools'",
        id="duplicate-key",
    ),
    pytest.param(
        configmap({"config": 7}),
        'configmap lbctl-system/lbctl-config: data["config"]: not a string',
        id="data-value-not-a-string",
    ),
    pytest.param(
        configmap(None),
        'configmap lbctl-system/lbctl-config: neither data["config.yaml"] (lbctl format) nor '
        'data["config"] (MetalLB format) is set',
        id="no-data",
    ),
    pytest.param(
        configmap({"config.yml": LBCTL}, namespace=None),
        'configmap lbctl-config: neither data["config.yaml"] (lbctl format) nor '
        'data["config"] (MetalLB format) is set',
        id="neither-key-and-no-namespace",
    ),
    pytest.param(
        configmap({"config": METALLB, "config.yaml": LBCTL}),
        'configmap lbctl-system/lbctl-config: both data["config.yaml"] (lbctl format) and '
        'data["config"] (MetalLB format) are set: keep one',
        id="both-keys",
    ),
    pytest.param(
        configmap(["config"]),
        "configmap lbctl-system/lbctl-config: data: not a mapping",
        id="data-not-a-mapping",
    ),
]


@pytest.mark.parametrize(("body", "line"), BROKEN)
def test_unusable_configmap_is_a_config_error_naming_it(body: dict[str, Any], line: str) -> None:
    assert error_lines(body) == [line]


def test_other_data_keys_are_a_warning() -> None:
    parsed = load_configmap(configmap({"config": METALLB, "notes": "hello"}))
    assert [str(w) for w in parsed.warnings if "notes" in w.where] == [
        'warning: configmap lbctl-system/lbctl-config: data["notes"]: ignored: '
        'lbctl reads only this ConfigMap\'s data["config"]'
    ]
    assert all(w.severity is Severity.WARNING for w in parsed.warnings)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        pytest.param("x: 64512:7", "64512:7", id="no-base-60-integers"),
        pytest.param("x: 1:30.5", "1:30.5", id="no-base-60-floats"),
        pytest.param("x: 2024-01-01", "2024-01-01", id="no-timestamps"),
        pytest.param("x: 0x10", 16, id="hex-integers-kept"),
        pytest.param("x: -1.5", -1.5, id="floats-kept"),
        pytest.param("x: yes", True, id="yaml-1.1-booleans-kept-as-go-yaml-v2-does"),
        pytest.param("base: &b {y: 1}\nx: {<<: *b, z: 2}", {"y": 1, "z": 2}, id="merge-keys"),
    ],
)
def test_yaml_scalars_resolve_as_metallb_reads_them(text: str, value: object) -> None:
    assert yaml.load(text, Loader=StrictLoader)["x"] == value
    assert yaml.safe_load("x: 64512:7")["x"] == 3870727  # PyYAML's own loader is untouched


def test_load_text_without_where_has_bare_messages() -> None:
    with pytest.raises(ConfigError) as caught:
        load_text("[1")
    assert str(caught.value.issues[0]).startswith("line 1, column 3: invalid YAML: ")


# --- streams of documents ------------------------------------------------------------------------


def test_single_document_is_labelled_with_the_source() -> None:
    [(label, loaded)] = load_documents(METALLB, "pools.yaml")
    assert label == "pools.yaml"
    assert isinstance(loaded, ParsedConfig)


def test_several_documents_are_numbered_counting_empty_ones() -> None:
    text = f"{METALLB}---\n---\n{LBCTL}---\n- not a mapping\n"
    results = load_documents(text, "f.yaml")
    assert [label for label, _ in results] == ["f.yaml: doc 1", "f.yaml: doc 3", "f.yaml: doc 4"]
    assert isinstance(results[0][1], ParsedConfig)
    assert isinstance(results[1][1], ParsedConfig)
    assert results[1][1].config.source_format is ConfigFormat.LBCTL
    assert isinstance(results[2][1], ConfigError)
    assert str(results[2][1].issues[0]) == "the document is a list, not a mapping"


def test_configmap_manifests_in_a_stream_are_read_by_their_data_key() -> None:
    manifest = yaml.safe_dump(configmap({"config": METALLB}))
    [(_, loaded)] = load_documents(manifest, "cm.yaml")
    assert isinstance(loaded, ParsedConfig)
    assert loaded.config.source_format is ConfigFormat.METALLB


def test_yaml_error_ends_the_stream_and_names_the_document() -> None:
    text = f"{METALLB}---\nkey: [unclosed\n---\n{METALLB}"
    results = load_documents(text, "f.yaml")
    assert [label for label, _ in results] == ["f.yaml: doc 1", "f.yaml: doc 2"]
    error = results[1][1]
    assert isinstance(error, ConfigError)
    assert "invalid YAML" in str(error.issues[0])
    assert str(error.issues[0]).startswith("line 7, column 1: ")  # lines count in the whole file


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n...\n"])
def test_a_stream_without_documents_is_an_error(text: str) -> None:
    [(label, loaded)] = load_documents(text, "empty.yaml")
    assert label == "empty.yaml"
    assert isinstance(loaded, ConfigError)
    assert "no configuration" in str(loaded)


def test_deeply_nested_yaml_is_a_config_error() -> None:
    [(_, loaded)] = load_documents("[" * 5000 + "]" * 5000, "deep.yaml")
    assert isinstance(loaded, ConfigError)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("password: !!int hunter2-s3cret\n", id="explicit-int-tag"),
        pytest.param("password: !!float hunter2-s3cret\n", id="explicit-float-tag"),
        pytest.param("x: 0b_\n", id="binary-without-digits"),
    ],
)
def test_values_pyyaml_cannot_convert_are_config_errors_that_do_not_quote_them(text: str) -> None:
    [(_, loaded)] = load_documents(text, "f.yaml")
    assert isinstance(loaded, ConfigError)
    assert str(loaded) == "invalid YAML: a value does not fit its type (ValueError)"
    with pytest.raises(ConfigError, match="does not fit its type"):
        load_text(text, where="w")


@settings(max_examples=300)
@given(st.text(alphabet=st.sampled_from(list("ab:-[]{}!&*|>'\"#%@`,?\n\t 0x_.~")), max_size=60))
def test_any_text_loads_to_configs_or_config_errors(text: str) -> None:
    for label, loaded in load_documents(text, "f.yaml"):
        assert label.startswith("f.yaml")
        assert isinstance(loaded, ParsedConfig | ConfigError)
