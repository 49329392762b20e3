"""The pool ConfigMap as the controller sees it: which config is in force and whether it is stale.

Used by the reconciler. Hot reload keeps the last good config: a ConfigMap that does not parse,
or that the allocator rejects (it would move assigned IPs), leaves the old one in force and marks
the state stale until a good one arrives.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lbctl.configmap import DATA_KEYS, LBCTL_KEY, METALLB_KEY, load_configmap
from lbctl.core.model import Config, ConfigError, ParsedConfig
from lbctl.core.reasons import StartBlock

DEFAULT_CONFIG_MAP = ("lbctl-system", "lbctl-config")


def parse_ref(text: str) -> tuple[str, str]:
    """`NAMESPACE/NAME` -> (namespace, name); raises ValueError naming the expected form."""
    namespace, sep, name = text.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise ValueError(f"{text!r}: expected NAMESPACE/NAME")
    return namespace, name


def fingerprint(body: Mapping[str, Any]) -> str:
    """Identity of a ConfigMap's content: a resync with the same data is not re-evaluated."""
    data = {"data": body.get("data"), "binaryData": body.get("binaryData")}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def summary(config: Config) -> str:
    """`2 pools (public: 254 IPv4; v6: 65536 IPv6)` for Events and logs."""
    parts = []
    for pool in config.pools:
        sizes = ", ".join(f"{pool.size(f)} {f.k8s}" for f in sorted(pool.families()))
        parts.append(f"{pool.name}: {sizes}")
    noun = "pool" if len(config.pools) == 1 else "pools"
    return f"{len(config.pools)} {noun} ({'; '.join(parts)})" if parts else "0 pools"


@dataclass
class ConfigState:
    """Last good config, the fingerprint last evaluated, and why the newest one is not in force."""

    namespace: str
    name: str
    in_force: ParsedConfig | None = None
    problem: str = ""  # empty when the newest ConfigMap content is the one in force
    seen: str | None = None  # fingerprint of the content last evaluated; "" = ConfigMap absent
    uid: str = ""

    @property
    def where(self) -> str:
        return f"configmap {self.namespace}/{self.name}"

    @property
    def loaded(self) -> bool:
        return self.in_force is not None

    @property
    def stale(self) -> bool:
        return bool(self.problem)

    def matches(self, namespace: str | None, name: str | None) -> bool:
        return (namespace, name) == (self.namespace, self.name)

    def is_new(self, body: Mapping[str, Any] | None) -> bool:
        """Whether body (None: the ConfigMap is gone) differs from what was last evaluated."""
        return (fingerprint(body) if body is not None else "") != self.seen

    def read(self, body: Mapping[str, Any] | None) -> ParsedConfig | ConfigError:
        """Parse a new ConfigMap body (marking it seen); absence is a ConfigError too."""
        self.seen = fingerprint(body) if body is not None else ""
        if body is None:
            self.uid = ""
            return ConfigError(())
        meta = body.get("metadata")
        self.uid = str(meta.get("uid") or "") if isinstance(meta, Mapping) else ""
        try:
            return load_configmap(body)
        except ConfigError as err:
            return err

    def accept(self, parsed: ParsedConfig) -> None:
        self.in_force, self.problem = parsed, ""

    def reject(self, problem: str) -> None:
        self.problem = problem

    def blocker(self, body: Mapping[str, Any] | None) -> tuple[StartBlock, str] | None:
        """Why no config is in force, after `body` (the newest ConfigMap, None: absent) was
        read, as a start blocker (controller.blocked) and what to do; None when one is."""
        if self.loaded:
            return None
        keys = f'data["{LBCTL_KEY}"] (lbctl format) or data["{METALLB_KEY}"] (MetalLB format)'
        if body is None:
            return StartBlock.CONFIG_MAP_MISSING, (
                f"{self.where} not found, so no address can be assigned: create it with the "
                f"pools under {keys}, or point --config-map at yours"
            )
        data = body.get("data")
        if not isinstance(data, Mapping) or not any(k in data for k in DATA_KEYS):
            present = ", ".join(sorted(map(str, data))) if isinstance(data, Mapping) else "none"
            return StartBlock.CONFIG_KEY_MISSING, (
                f"{self.where} has no key this controller reads (its keys: {present}): put the "
                f"pools under {keys}"
            )
        return StartBlock.CONFIG_INVALID, (
            f"{self.problem or self.where + ' does not load'}: fix it (`lbctl validate` checks "
            "a file before it is applied)"
        )

    def why_no_config(self) -> str:
        """The message pending Services carry while no valid config was ever loaded."""
        return f"no valid config in force: {self.problem or self.where + ' not read yet'}"
