"""Merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge patch; used by the store."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from lbctl.lab.api.errors import ApiError

Body = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

# List fields merged element-wise by a key under strategic merge, as the Go types declare with
# patchStrategy:"merge" + patchMergeKey (Service ports also carry protocol, as listMapKeys do).
# Paths have list indices removed. Lists not named here are replaced whole (atomic), which is
# what status.loadBalancer.ingress is.
MERGE_KEYS: dict[str, tuple[tuple[str, str], ...]] = {
    "metadata.ownerReferences": (("uid", ""),),
    "spec.ports": (("port", ""), ("protocol", "TCP")),
    "status.conditions": (("type", ""),),
    "status.addresses": (("type", ""),),
    "spec.taints": (("key", ""), ("effect", "")),
    "spec.template.spec.containers": (("name", ""),),
    "spec.containers": (("name", ""),),
    "spec.template.spec.volumes": (("name", ""),),
    "spec.volumes": (("name", ""),),
    "spec.template.spec.containers.env": (("name", ""),),
    "spec.containers.env": (("name", ""),),
    "spec.template.spec.containers.ports": (("containerPort", ""), ("protocol", "TCP")),
    "spec.containers.ports": (("containerPort", ""), ("protocol", "TCP")),
}
# Lists of scalars merged as sets (patchStrategy:"merge" on []string).
PRIMITIVE_MERGE = frozenset({"metadata.finalizers"})


def decode(raw: bytes) -> Any:
    try:
        return json.loads(raw or b"null")
    except ValueError as err:
        raise ApiError(400, f"error decoding patch: {err}") from err


def apply_patch(content_type: str, target: Body, patch: Any) -> Body:
    """Dispatch on the Content-Type the client sent, as the real server does."""
    kind = content_type.split(";", maxsplit=1)[0].strip().lower()
    if kind == MERGE_PATCH:
        if not isinstance(patch, dict):
            raise ApiError(400, "merge patch must be a JSON object")
        return _as_object(merge_patch(target, patch))
    if kind == JSON_PATCH:
        return json_patch(target, patch)
    if kind == STRATEGIC_PATCH:
        if not isinstance(patch, dict):
            raise ApiError(400, "strategic merge patch must be a JSON object")
        return _as_object(strategic_merge(target, patch, ""))
    raise ApiError(
        415,
        f"the body of the request was in an unknown format - accepted media "
        f"types include: {JSON_PATCH}, {MERGE_PATCH}, {STRATEGIC_PATCH}",
    )


def _as_object(doc: Any) -> Body:
    if not isinstance(doc, dict):
        raise ApiError(422, "the patch must leave an object")
    return doc


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


# ---- JSON patch ---------------------------------------------------------------------------


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str], path: str) -> Any:
    node = doc
    for part in parts[:-1]:
        node = _child(node, part, path)
    return node


def _child(node: Any, part: str, path: str) -> Any:
    if isinstance(node, dict) and part in node:
        return node[part]
    if isinstance(node, list) and re.fullmatch(r"\d+", part) and int(part) < len(node):
        return node[int(part)]
    raise ApiError(422, f"the server rejected our request: path {path!r} does not exist")


def _add(doc: Any, path: str, value: Any) -> Any:
    parts = _pointer(path)
    if not parts:
        return copy.deepcopy(value)
    parent = _parent(doc, parts, path)
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = copy.deepcopy(value)
    elif isinstance(parent, list):
        index = len(parent) if last == "-" else int(last) if last.isdigit() else -1
        if not 0 <= index <= len(parent):
            raise ApiError(422, f"the server rejected our request: index out of range in {path!r}")
        parent.insert(index, copy.deepcopy(value))
    else:
        raise ApiError(422, f"the server rejected our request: cannot add at {path!r}")
    return doc


def _remove(doc: Any, path: str) -> tuple[Any, Any]:
    parts = _pointer(path)
    parent = _parent(doc, parts, path)
    old = _child(parent, parts[-1], path)
    if isinstance(parent, dict):
        del parent[parts[-1]]
    else:
        del parent[int(parts[-1])]
    return doc, old


def _get(doc: Any, path: str) -> Any:
    node = doc
    for part in _pointer(path):
        node = _child(node, part, path)
    return node


def json_patch(target: Body, ops: Any) -> Body:
    if not isinstance(ops, list):
        raise ApiError(400, "json patch must be a JSON array of operations")
    doc: Any = copy.deepcopy(target)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise ApiError(400, f"invalid json patch operation: {op!r}")
        doc = _json_op(doc, op)
    if not isinstance(doc, dict):
        raise ApiError(422, "json patch must leave an object")
    return doc


def _json_op(doc: Any, op: Body) -> Any:
    name, path = op["op"], op["path"]
    if name == "add":
        return _add(doc, path, op.get("value"))
    if name == "remove":
        return _remove(doc, path)[0]
    if name == "replace":
        doc, _ = _remove(doc, path) if _pointer(path) else (doc, None)
        return _add(doc, path, op.get("value"))
    if name == "move":
        doc, value = _remove(doc, op["from"])
        return _add(doc, path, value)
    if name == "copy":
        return _add(doc, path, _get(doc, op["from"]))
    if name == "test":
        if _get(doc, path) != op.get("value"):
            raise ApiError(
                422,
                f"the server rejected our request due to an error in our request: "
                f"testing value at {path!r} failed",
            )
        return doc
    raise ApiError(400, f"unknown json patch operation {name!r}")


# ---- strategic merge patch ----------------------------------------------------------------


def _directive_key(key: str) -> bool:
    return key.startswith("$setElementOrder/") or key in ("$retainKeys",)


def strategic_merge(target: Any, patch: Body, path: str) -> Any:
    """Merge `patch` into `target` (a dict), honouring `$patch` and list merge keys."""
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: v for k, v in copy.deepcopy(patch).items() if k != "$patch"}
    if directive == "delete":
        return None
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key == "$patch" or _directive_key(key):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            out[field] = [x for x in out.get(field) or [] if x not in (value or [])]
            continue
        sub = f"{path}.{key}" if path else key
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            merged = strategic_merge(out.get(key), value, sub)
            if merged is None:
                out.pop(key, None)
            else:
                out[key] = merged
        elif isinstance(value, list):
            out[key] = _merge_list(out.get(key), value, sub)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _identity(item: Any, keys: tuple[tuple[str, str], ...]) -> tuple[Any, ...]:
    return tuple(item.get(k, default) if isinstance(item, dict) else None for k, default in keys)


def _merge_list(current: Any, patch: list[Any], path: str) -> list[Any]:
    current = current if isinstance(current, list) else []
    if path in PRIMITIVE_MERGE:
        return list(current) + [x for x in patch if x not in current]
    keys = MERGE_KEYS.get(path)
    if keys is None or any(isinstance(x, dict) and x.get("$patch") == "replace" for x in patch):
        return [copy.deepcopy(x) for x in patch if not (isinstance(x, dict) and x.get("$patch"))]
    out = list(current)
    for item in patch:
        if not isinstance(item, dict):
            raise ApiError(400, f"strategic merge patch: {path} must hold objects")
        ident = _identity(item, keys)
        index = next((i for i, x in enumerate(out) if _identity(x, keys) == ident), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del out[index]
        elif index is None:
            out.append({k: v for k, v in copy.deepcopy(item).items() if k != "$patch"})
        else:
            out[index] = strategic_merge(out[index], item, path)
    return out
