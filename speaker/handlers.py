"""kopf handlers of the speaker: translate a watch event and hand it to the agent, nothing more.
Level-based (on.event only): no progress annotations, no finalizers, nothing written by kopf.

The handlers are coroutines on purpose: kopf runs plain functions in a thread pool, where they
would change the agent's indexes while the planner iterates them and set its asyncio.Event from
a foreign thread (which does not wake the loop). As coroutines they run on the agent's loop.

kopf keeps a record per watched object (ResourceMemories: a memo, throttler, daemon and index
state, ~0.8 KiB each, 1.5 KiB per Service with its EndpointSlice); with on.event handlers only,
nothing reads it from one event to the next, so the speaker runs kopf with ForgetfulMemories."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import kopf
from kopf._cogs.structs import ephemera  # kopf.operator(memories=...) takes ResourceMemories,
from kopf._core.reactor import inventory  # which kopf does not re-export

from speaker.agent import Agent


class ForgetfulMemories(inventory.ResourceMemories):
    """kopf's per-object records, made for each event and never kept. Right only for handlers
    that keep no state in kopf between events (on.event: no daemons, timers, indexes, or
    change-detecting on.create/update/resume handlers), which register() below holds to."""

    async def recall(
        self,
        raw_body: kopf.RawBody,
        *,
        memobase: ephemera.AnyMemo | None = None,
        noticed_by_listing: bool = False,
        ephemeral: bool = False,
    ) -> inventory.ResourceMemory:
        return await super().recall(
            raw_body, memobase=memobase, noticed_by_listing=noticed_by_listing, ephemeral=True
        )


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
