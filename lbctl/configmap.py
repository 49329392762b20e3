"""YAML text and ConfigMap bodies -> ParsedConfig; used by the controller, the speaker and the CLI.

The core never sees YAML: this module loads it (strictly: a duplicate key is an error, as in
MetalLB's strict unmarshalling), picks the format from the ConfigMap's data key and hands the
tree to lbctl.core.parse. Every failure, YAML syntax included, is a ConfigError whose issue names
the ConfigMap and the data key.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterator, Mapping
from typing import Any

import yaml

from lbctl.core.model import ConfigError, ConfigFormat, ConfigIssue, ParsedConfig, Severity
from lbctl.core.parse import parse_document

LBCTL_KEY = "config.yaml"  # lbctl's format
METALLB_KEY = "config"  # MetalLB's legacy format, verbatim
DATA_KEYS = {LBCTL_KEY: ConfigFormat.LBCTL, METALLB_KEY: ConfigFormat.METALLB}
MERGE_TAG = "tag:yaml.org,2002:merge"

Loaded = ParsedConfig | ConfigError


class StrictLoader(yaml.SafeLoader):
    """SafeLoader reading YAML the way MetalLB's Go loader does, so configs mean the same.

    - A mapping repeating a key is an error (PyYAML silently keeps the last value).
    - No base-60 numbers: YAML 1.1 reads `64512:7` (a BGP community) as the integer 3870727;
      Go's yaml.v2 and YAML 1.2 keep it a string.
    - No timestamps: `2024-01-01` stays a string, as in a Kubernetes object.
    """


_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
# PyYAML's own int and float patterns, without their base-60 branches.
_INT_RE = re.compile(
    r"""^(?:[-+]?0b[0-1_]+
    |[-+]?0[0-7_]+
    |[-+]?(?:0|[1-9][0-9_]*)
    |[-+]?0x[0-9a-fA-F_]+)$""",
    re.VERBOSE,
)
_FLOAT_RE = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
    |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.VERBOSE,
)
StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT, _FLOAT, _TIMESTAMP)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
StrictLoader.add_implicit_resolver(_INT, _INT_RE, list("-+0123456789"))
StrictLoader.add_implicit_resolver(_FLOAT, _FLOAT_RE, list("-+0123456789."))


def _strict_mapping(loader: StrictLoader, node: yaml.MappingNode) -> Iterator[dict[Any, Any]]:
    seen: set[Hashable] = set()
    for key_node, _ in node.value:
        if key_node.tag == MERGE_TAG:
            continue
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, Hashable):
            continue  # construct_mapping reports unhashable keys itself
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r}",
                key_node.start_mark,
            )
        seen.add(key)
    data: dict[Any, Any] = {}
    yield data  # PyYAML's protocol for mappings that may contain themselves
    data.update(loader.construct_mapping(node, deep=False))


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _strict_mapping)


def _fail(where: str, message: str) -> ConfigError:
    return ConfigError((ConfigIssue(where, message),))


def yaml_issue(where: str, err: Exception) -> ConfigIssue:
    """A failure to load YAML as one issue: `line L, column C: invalid YAML: <problem>`.

    Errors that are not PyYAML's (a ValueError from `!!int x`...) are named by type only: their
    text quotes the value, which could be a password.
    """
    if isinstance(err, RecursionError):
        return ConfigIssue(where, "invalid YAML: nested too deeply")
    if not isinstance(err, yaml.YAMLError):
        return ConfigIssue(
            where, f"invalid YAML: a value does not fit its type ({type(err).__name__})"
        )
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    context = getattr(err, "context", None)
    if context and not context.startswith("while "):  # "while parsing a ..." only adds noise
        problem = f"{context}, {problem}"
    if mark is None:
        return ConfigIssue(where, f"invalid YAML: {problem}")
    at = f"line {mark.line + 1}, column {mark.column + 1}"
    return ConfigIssue(where, f"{at}: invalid YAML: {problem}")


_KINDS = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean"}


def _check_mapping(doc: object, where: str) -> None:
    if doc is None:
        raise _fail(where, "the document is empty")
    if not isinstance(doc, Mapping):
        kind = _KINDS.get(type(doc), type(doc).__name__)
        raise _fail(where, f"the document is {kind}, not a mapping")


def load_text(text: str, *, where: str = "", fmt: ConfigFormat | None = None) -> ParsedConfig:
    """One YAML document (a ConfigMap's data value) -> ParsedConfig; raises ConfigError."""
    try:
        doc = yaml.load(text, Loader=StrictLoader)  # StrictLoader is a SafeLoader
    except Exception as err:  # the YAML loader is foreign code: whatever it raises is bad input
        raise ConfigError((yaml_issue(where, err),)) from err
    _check_mapping(doc, where)
    return parse_document(doc, fmt=fmt, where=where)


def configmap_where(body: Mapping[str, object]) -> str:
    """`configmap NAMESPACE/NAME` (just NAME for a manifest without a namespace)."""
    meta = body.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    name, namespace = meta.get("name"), meta.get("namespace")
    name = name if isinstance(name, str) and name else "<unnamed>"
    if isinstance(namespace, str) and namespace:
        return f"configmap {namespace}/{name}"
    return f"configmap {name}"


def load_configmap(body: Mapping[str, object]) -> ParsedConfig:
    """A ConfigMap body -> ParsedConfig: data["config.yaml"] lbctl's, data["config"] MetalLB's."""
    where = configmap_where(body)
    data = body.get("data") or {}
    if not isinstance(data, Mapping):
        raise _fail(f"{where}: data", "not a mapping")
    present = [key for key in DATA_KEYS if key in data]
    if len(present) > 1:
        raise _fail(
            where,
            f'both data["{LBCTL_KEY}"] (lbctl format) and data["{METALLB_KEY}"] (MetalLB format)'
            " are set: keep one",
        )
    if not present:
        raise _fail(
            where,
            f'neither data["{LBCTL_KEY}"] (lbctl format) nor data["{METALLB_KEY}"] (MetalLB format)'
            " is set",
        )
    key = present[0]
    key_where = f'{where}: data["{key}"]'
    text = data[key]
    if not isinstance(text, str):
        raise _fail(key_where, "not a string")
    parsed = load_text(text, where=key_where, fmt=DATA_KEYS[key])
    ignored = tuple(
        ConfigIssue(
            f'{where}: data["{other}"]',
            f'ignored: lbctl reads only this ConfigMap\'s data["{key}"]',
            Severity.WARNING,
        )
        for other in sorted(str(k) for k in data)
        if other != key
    )
    return ParsedConfig(parsed.config, parsed.warnings + ignored) if ignored else parsed


def _load_one(doc: object) -> Loaded:
    try:
        if isinstance(doc, Mapping) and doc.get("kind") == "ConfigMap":
            return load_configmap(doc)
        _check_mapping(doc, "")
        return parse_document(doc)
    except ConfigError as err:
        return err


def load_documents(text: str, source: str) -> list[tuple[str, Loaded]]:
    """Every document of a YAML stream: a ConfigMap manifest or a bare config document.

    Labels are `SOURCE` for a single document, `SOURCE: doc N` (N counted from 1, empty
    documents included) when the stream holds several. A YAML error ends the stream: it is the
    last entry, labelled with the document it occurred in.
    """
    results: list[tuple[int, Loaded]] = []
    count = 0
    try:
        for doc in yaml.load_all(text, Loader=StrictLoader):  # StrictLoader is a SafeLoader
            count += 1
            if doc is not None:
                results.append((count, _load_one(doc)))
    except Exception as err:  # the YAML loader is foreign code: whatever it raises is bad input
        count += 1
        results.append((count, ConfigError((yaml_issue("", err),))))
    if not results:
        return [(source, _fail("", "no configuration: the file holds no YAML document"))]
    if count == 1:
        return [(source, results[0][1])]
    return [(f"{source}: doc {n}", loaded) for n, loaded in results]
