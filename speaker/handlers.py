"""kopf handlers of the speaker: translate a watch event and hand it to the agent, nothing more.
Level-based (on.event only): no progress annotations, no finalizers, nothing written by kopf.

The handlers are coroutines on purpose: kopf runs plain functions in a thread pool, where they
would change the agent's indexes while the planner iterates them and set its asyncio.Event from
a foreign thread (which does not wake the loop). As coroutines they run on the agent's loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import kopf

from speaker.agent import Agent


def register(
    registry: kopf.OperatorRegistry, agent: Agent, login: Callable[[], kopf.ConnectionInfo]
) -> None:
    @kopf.on.login(registry=registry)
    def _login(**_: Any) -> kopf.ConnectionInfo:
        return login()

    @kopf.on.event("v1", "services", registry=registry)
    async def _service(event: kopf.RawEvent, **_: Any) -> None:
        agent.on_service(event["type"], event["object"])

    @kopf.on.event("discovery.k8s.io", "v1", "endpointslices", registry=registry)
    async def _slice(event: kopf.RawEvent, **_: Any) -> None:
        agent.on_slice(event["type"], event["object"])

    @kopf.on.event("v1", "nodes", registry=registry)
    async def _node(event: kopf.RawEvent, **_: Any) -> None:
        agent.on_node(event["type"], event["object"])

    def _is_config(name: str | None, namespace: str | None, **_: Any) -> bool:
        return (namespace, name) == agent.config_ref

    @kopf.on.event("v1", "configmaps", registry=registry, when=_is_config)
    async def _configmap(event: kopf.RawEvent, **_: Any) -> None:
        agent.on_config(event["type"], event["object"])
