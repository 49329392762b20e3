"""Stand-ins for the speaker Agent's API and data plane in unit tests: the API records each
condition patch's body; the data plane keeps the last plan it was handed and holds nothing."""

from __future__ import annotations

from lbctl.core.model import IPAddress
from speaker.dataplane_types import Plan


class Kube:
    def __init__(self) -> None:
        self.patches: list[dict[str, object]] = []

    def patch_condition(self, namespace: str, name: str, body: dict[str, object]) -> None:
        self.patches.append(body)

    def annotate_node(self, key: str, value: str) -> None: ...

    def api_reachable(self) -> bool:
        return True


class DataPlane:
    def __init__(self) -> None:
        self.plan = Plan((), {}, {})

    def update(self, plan: Plan) -> None:
        self.plan = plan

    def cannot_carry(self) -> frozenset[IPAddress]:
        return frozenset()

    def someone_else_holds(self, key: IPAddress) -> bool:
        return False
