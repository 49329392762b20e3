"""Label selectors in the config (lbctl's camelCase keys or MetalLB's kebab-case): the keys each
format uses and the readers of matchLabels and matchExpressions; called by parse_common.Issues.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lbctl.core.model import SelectorOperator, SelectorRequirement
from lbctl.core.parse_values import at, check_label_key, check_label_value, key_text, quote

if TYPE_CHECKING:
    from lbctl.core.parse_common import Issues, Tree


@dataclass(frozen=True, slots=True)
class SelectorKeys:
    """How a format spells a selector's keys: lbctl's camelCase or MetalLB's kebab-case."""

    match_labels: str
    match_expressions: str


CAMEL_KEYS = SelectorKeys("matchLabels", "matchExpressions")
KEBAB_KEYS = SelectorKeys("match-labels", "match-expressions")
_OPERATORS = ", ".join(op.value for op in SelectorOperator)


def match_labels(issues: Issues, m: Tree, key: str, where: str) -> list[tuple[str, str]]:
    labels = issues.get_map(m, key, where) or {}
    out: list[tuple[str, str]] = []
    for k, v in labels.items():
        w = at(at(where, key), key_text(k))
        if not isinstance(k, str) or not isinstance(v, str):
            issues.error(w, "label keys and values must be strings")
            continue
        if issues.checked(check_label_key, k, w) and issues.checked(check_label_value, v, w):
            out.append((k, v))
    return sorted(out)


def requirement(issues: Issues, m: Tree, where: str) -> SelectorRequirement | None:
    issues.reject_unknown(m, ("key", "operator", "values"), where)
    key = issues.get_str(m, "key", where, required=True)
    op_text = issues.get_str(m, "operator", where, required=True)
    found = issues.get_str_list(m, "values", where)
    values_ok = found is not None or m.get("values") is None
    values = found or ()
    if key is not None and not issues.checked(check_label_key, key, at(where, "key")):
        key = None
    for i, v in enumerate(values):
        issues.checked(check_label_value, v, at(at(where, "values"), i))
    if op_text is None:
        return None
    try:
        op = SelectorOperator(op_text)
    except ValueError:
        issues.error(at(where, "operator"), f"{quote(op_text)}: must be one of {_OPERATORS}")
        return None
    needs_values = op in (SelectorOperator.IN, SelectorOperator.NOT_IN)
    if not values_ok:
        return None  # bad values were reported; "needs values" would only add noise
    if needs_values and not values:
        issues.error(at(where, "values"), f"operator {op.value} needs at least one value")
    elif not needs_values and values:
        issues.error(at(where, "values"), f"operator {op.value} takes no values")
    return None if key is None else SelectorRequirement(key, op, tuple(values))
