"""kopf handlers: translate and delegate to controller.operator; registered by runner.

Level-based only (on.event and startup): kopf keeps no progress annotations and adds no
finalizers on users' Services, and its own Event posting is off (Events go through kube.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import kopf

from controller.operator import Operator


def register(
    registry: kopf.OperatorRegistry,
    operator: Operator,
    login: Callable[[], kopf.ConnectionInfo],
) -> None:
    """Attach the controller's handlers to a private registry (several operators per process)."""

    @kopf.on.login(registry=registry)
    def _login(**_: Any) -> kopf.ConnectionInfo:
        return login()

    @kopf.on.startup(registry=registry)
    async def _startup(**_: Any) -> None:
        await operator.startup()

    @kopf.on.event("v1", "services", registry=registry)
    async def _service(event: kopf.RawEvent, **_: Any) -> None:
        await operator.on_service(event["type"], event["object"])

    @kopf.on.event("v1", "namespaces", registry=registry)
    async def _namespace(event: kopf.RawEvent, **_: Any) -> None:
        await operator.on_namespace(event["type"], event["object"])


def register_config(
    registry: kopf.OperatorRegistry,
    operator: Operator,
    login: Callable[[], kopf.ConnectionInfo],
) -> None:
    """The pool ConfigMap's handler, on a registry of its own: runner watches it with an
    operator scoped to its namespace and a fieldSelector on its name (least privilege)."""

    @kopf.on.login(registry=registry)
    def _login(**_: Any) -> kopf.ConnectionInfo:
        return login()

    def _is_config(name: str | None, namespace: str | None, **_: Any) -> bool:
        return operator.reconciler.config.matches(namespace, name)  # the server filtered already

    @kopf.on.event("v1", "configmaps", registry=registry, when=_is_config)
    async def _configmap(event: kopf.RawEvent, **_: Any) -> None:
        await operator.on_config(event["type"], event["object"])
