"""Kubernetes' time formats, the one place that writes them; used by the core, the controller and
the lab. Time comes in as an argument (the core never reads the clock)."""

from __future__ import annotations

from datetime import UTC, datetime


def rfc3339(moment: datetime) -> str:
    """metav1.Time: RFC 3339 in UTC, whole seconds (`2026-12-04T07:19:29Z`)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_time(moment: datetime) -> str:
    """metav1.MicroTime: RFC 3339 in UTC with exactly six fractional digits."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
