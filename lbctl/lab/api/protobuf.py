"""Decode the protobuf bodies kubectl's typed `create` commands send into JSON; used by handlers.

kubectl 1.37 posts `kubectl create deployment|namespace|configmap|secret|service` as
application/vnd.kubernetes.protobuf with no JSON fallback, so the bed decodes that subset.
Field numbers are those of k8s.io/api's generated.proto; unknown fields are dropped.
Answers stay JSON: those clients accept it.
"""

from __future__ import annotations

import base64
from typing import Any

from lbctl.lab.api.errors import ApiError

Body = dict[str, Any]
MAGIC = b"k8s\x00"
# field -> (json name, kind, flags); kind: s string, i int, b bool, y bytes, map, mapy
# (string->bytes), ios (IntOrString), or a message name. Flags: r repeated, p pointer (zero
# values are kept: gogo encodes non-pointer zero fields, which JSON would omit).
Schema = dict[int, tuple[str, str, str]]
SCHEMAS: dict[str, Schema] = {
    "ObjectMeta": {
        1: ("name", "s", ""), 2: ("generateName", "s", ""), 3: ("namespace", "s", ""),
        5: ("uid", "s", ""), 6: ("resourceVersion", "s", ""), 7: ("generation", "i", ""),
        11: ("labels", "map", ""), 12: ("annotations", "map", ""),
        13: ("ownerReferences", "OwnerReference", "r"), 14: ("finalizers", "s", "r"),
    },
    "OwnerReference": {
        1: ("kind", "s", ""), 3: ("name", "s", ""), 4: ("uid", "s", ""),
        5: ("apiVersion", "s", ""), 6: ("controller", "b", "p"),
        7: ("blockOwnerDeletion", "b", "p"),
    },
    "Deployment": {1: ("metadata", "ObjectMeta", ""), 2: ("spec", "DeploymentSpec", "")},
    "DeploymentSpec": {
        1: ("replicas", "i", "p"), 2: ("selector", "LabelSelector", ""),
        3: ("template", "PodTemplateSpec", ""), 4: ("strategy", "DeploymentStrategy", ""),
        5: ("minReadySeconds", "i", ""), 6: ("revisionHistoryLimit", "i", "p"),
        7: ("paused", "b", ""), 9: ("progressDeadlineSeconds", "i", "p"),
    },
    "DeploymentStrategy": {1: ("type", "s", "")},
    "LabelSelector": {
        1: ("matchLabels", "map", ""),
        2: ("matchExpressions", "LabelSelectorRequirement", "r"),
    },
    "LabelSelectorRequirement": {
        1: ("key", "s", ""), 2: ("operator", "s", ""), 3: ("values", "s", "r"),
    },
    "PodTemplateSpec": {1: ("metadata", "ObjectMeta", ""), 2: ("spec", "PodSpec", "")},
    "PodSpec": {
        2: ("containers", "Container", "r"), 3: ("restartPolicy", "s", ""),
        4: ("terminationGracePeriodSeconds", "i", "p"), 6: ("dnsPolicy", "s", ""),
        7: ("nodeSelector", "map", ""), 8: ("serviceAccountName", "s", ""),
        10: ("nodeName", "s", ""), 11: ("hostNetwork", "b", ""),
    },
    "Container": {
        1: ("name", "s", ""), 2: ("image", "s", ""), 3: ("command", "s", "r"),
        4: ("args", "s", "r"), 5: ("workingDir", "s", ""), 6: ("ports", "ContainerPort", "r"),
        7: ("env", "EnvVar", "r"), 8: ("resources", "Empty", "p"),
        14: ("imagePullPolicy", "s", ""),
    },
    "ContainerPort": {
        1: ("name", "s", ""), 2: ("hostPort", "i", ""), 3: ("containerPort", "i", ""),
        4: ("protocol", "s", ""), 5: ("hostIP", "s", ""),
    },
    "EnvVar": {1: ("name", "s", ""), 2: ("value", "s", "")},
    "Empty": {},
    "Namespace": {1: ("metadata", "ObjectMeta", ""), 2: ("spec", "NamespaceSpec", "")},
    "NamespaceSpec": {1: ("finalizers", "s", "r")},
    "ConfigMap": {
        1: ("metadata", "ObjectMeta", ""), 2: ("data", "map", ""),
        3: ("binaryData", "mapy", ""), 4: ("immutable", "b", "p"),
    },
    "Secret": {
        1: ("metadata", "ObjectMeta", ""), 2: ("data", "mapy", ""), 3: ("type", "s", ""),
        4: ("stringData", "map", ""), 5: ("immutable", "b", "p"),
    },
    "Service": {1: ("metadata", "ObjectMeta", ""), 2: ("spec", "ServiceSpec", "")},
    "ServiceSpec": {
        1: ("ports", "ServicePort", "r"), 2: ("selector", "map", ""),
        3: ("clusterIP", "s", ""), 4: ("type", "s", ""), 5: ("externalIPs", "s", "r"),
        7: ("sessionAffinity", "s", ""), 8: ("loadBalancerIP", "s", ""),
        9: ("loadBalancerSourceRanges", "s", "r"), 10: ("externalName", "s", ""),
        11: ("externalTrafficPolicy", "s", ""), 12: ("healthCheckNodePort", "i", ""),
        13: ("publishNotReadyAddresses", "b", ""), 17: ("ipFamilyPolicy", "s", "p"),
        18: ("clusterIPs", "s", "r"), 19: ("ipFamilies", "s", "r"),
        20: ("allocateLoadBalancerNodePorts", "b", "p"), 21: ("loadBalancerClass", "s", "p"),
        22: ("internalTrafficPolicy", "s", "p"),
    },
    "ServicePort": {
        1: ("name", "s", ""), 2: ("protocol", "s", ""), 3: ("port", "i", ""),
        4: ("targetPort", "ios", ""), 5: ("nodePort", "i", ""), 6: ("appProtocol", "s", "p"),
    },
}  # fmt: skip
_MAP_ENTRY: Schema = {1: ("key", "s", ""), 2: ("value", "s", "")}
_MAPY_ENTRY: Schema = {1: ("key", "s", ""), 2: ("value", "y", "")}
_IOS: Schema = {1: ("type", "i", "p"), 2: ("intVal", "i", "p"), 3: ("strVal", "s", "p")}
_UNKNOWN: Schema = {1: ("typeMeta", "TypeMeta", "")}
SCHEMAS["TypeMeta"] = {1: ("apiVersion", "s", ""), 2: ("kind", "s", "")}


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            out.append((number, value))
        elif wire == 2:
            size, pos = _varint(buf, pos)
            out.append((number, buf[pos : pos + size]))
            pos += size
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            out.append((number, int.from_bytes(buf[pos : pos + width], "little")))
            pos += width
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return out


def _value(kind: str, raw: int | bytes) -> Any:
    if kind == "s":
        return raw.decode() if isinstance(raw, bytes) else str(raw)
    if kind == "y":
        return base64.b64encode(raw).decode() if isinstance(raw, bytes) else ""
    if kind in ("i", "b"):
        number = raw if isinstance(raw, int) else 0
        number = number - (1 << 64) if number >= 1 << 63 else number
        return bool(number) if kind == "b" else number
    assert isinstance(raw, bytes)
    if kind in ("map", "mapy"):
        entry = _message(raw, _MAPY_ENTRY if kind == "mapy" else _MAP_ENTRY, keep_all=True)
        return (str(entry.get("key", "")), entry.get("value", ""))
    if kind == "ios":
        ios = _message(raw, _IOS, keep_all=True)
        return ios.get("strVal", "") if ios.get("type") == 1 else ios.get("intVal", 0)
    return _message(raw, SCHEMAS[kind])


def _message(buf: bytes, schema: Schema, *, keep_all: bool = False) -> Body:
    out: Body = {}
    for number, raw in _fields(buf):
        if number not in schema:
            continue
        name, kind, flags = schema[number]
        value = _value(kind, raw)
        if kind in ("map", "mapy"):
            out.setdefault(name, {})[value[0]] = value[1]
        elif "r" in flags:
            out.setdefault(name, []).append(value)
        elif keep_all or "p" in flags or value not in ("", 0, False, {}):
            out[name] = value
    return out


def decode(body: bytes) -> Body:
    """A kubernetes protobuf envelope (magic + runtime.Unknown) as the equivalent JSON object."""
    if not body.startswith(MAGIC):
        raise ApiError(400, "protobuf body without the k8s magic prefix")
    try:
        unknown = _message(body[len(MAGIC) :], {1: _UNKNOWN[1]})
        raw = next(v for n, v in _fields(body[len(MAGIC) :]) if n == 2)
        meta = unknown.get("typeMeta", {})
        kind = meta.get("kind", "")
        if kind not in SCHEMAS or not isinstance(raw, bytes):
            raise ApiError(415, f"the bed decodes protobuf only for {sorted(SCHEMAS)}, "
                           f"not {kind!r}; send application/json")  # fmt: skip
        obj = _message(raw, SCHEMAS[kind])
    except (ValueError, StopIteration, UnicodeDecodeError) as err:
        raise ApiError(400, f"malformed protobuf body: {err}") from err
    return {"kind": kind, "apiVersion": meta.get("apiVersion", ""), **obj}
