"""Kubernetes API errors as Status bodies; raised by the store and handlers, rendered by the app."""

from __future__ import annotations

from typing import Any

Body = dict[str, Any]

# The reason strings a real API server puts in Status.reason (metav1.StatusReason).
REASONS = {
    400: "BadRequest",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class ApiError(Exception):
    """An error answered as a metav1 Status with an HTTP code."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        reason: str | None = None,
        details: Body | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or REASONS.get(code, "Unknown")
        self.details = details

    def status(self) -> Body:
        return status_body(self.code, self.message, reason=self.reason, details=self.details)


def status_body(
    code: int, message: str, *, reason: str | None = None, details: Body | None = None
) -> Body:
    body: Body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success" if code < 400 else "Failure",
        "message": message,
        "reason": reason or REASONS.get(code, "Unknown"),
        "code": code,
    }
    if details is not None:
        body["details"] = details
    return body


def not_found(kind_plural: str, group: str, name: str) -> ApiError:
    what = f"{kind_plural}.{group}" if group else kind_plural
    return ApiError(
        404,
        f'{what} "{name}" not found',
        details={"name": name, "group": group, "kind": kind_plural},
    )


def already_exists(kind_plural: str, group: str, name: str) -> ApiError:
    what = f"{kind_plural}.{group}" if group else kind_plural
    return ApiError(
        409,
        f'{what} "{name}" already exists',
        reason="AlreadyExists",
        details={"name": name, "group": group, "kind": kind_plural},
    )


def conflict(kind_plural: str, group: str, name: str) -> ApiError:
    what = f"{kind_plural}.{group}" if group else kind_plural
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {what} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        reason="Conflict",
        details={"name": name, "group": group, "kind": kind_plural},
    )


def invalid(kind: str, group: str, name: str, causes: list[tuple[str, str]]) -> ApiError:
    """A 422 Invalid with (field, message) causes, worded like the real validation errors."""
    text = ", ".join(f"{field}: {msg}" for field, msg in causes)
    return ApiError(
        422,
        f'{kind} "{name}" is invalid: {text}',
        reason="Invalid",
        details={
            "name": name,
            "group": group,
            "kind": kind,
            "causes": [
                {"reason": "FieldValueInvalid", "message": msg, "field": field}
                for field, msg in causes
            ],
        },
    )


def gone(message: str) -> ApiError:
    return ApiError(410, message, reason="Expired")
