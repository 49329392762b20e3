"""Config entry point: detect a loaded YAML tree's format and parse it; called by configmap, CLI.

Whatever the input, `parse_document` returns a ParsedConfig or raises ConfigError. A crash inside a
parser is a bug of ours: it still becomes a ConfigError (so a bad ConfigMap can never take the
controller down), but of the distinct subclass ParserCrash, which tests and logs can tell apart.
"""

from __future__ import annotations

from collections.abc import Mapping

from lbctl.core.model import ConfigError, ConfigFormat, ConfigIssue, ParsedConfig
from lbctl.core.parse_common import quote

LBCTL_API_VERSION = "lbctl.io/v1alpha1"


class ParserCrash(ConfigError):
    """A parser raised something unexpected: a bug in lbctl, reported as an invalid config.

    The message names only the exception type: its text could quote a password.
    """

    def __init__(self, issue: ConfigIssue, cause: BaseException) -> None:
        super().__init__((issue,))
        self.cause = cause


def detect_format(doc: object) -> ConfigFormat:
    """lbctl's format iff a mapping whose apiVersion is lbctl.io/v1alpha1; else MetalLB legacy."""
    if isinstance(doc, Mapping) and doc.get("apiVersion") == LBCTL_API_VERSION:
        return ConfigFormat.LBCTL
    return ConfigFormat.METALLB


def parse_document(
    doc: object, *, fmt: ConfigFormat | None = None, where: str = ""
) -> ParsedConfig:
    """Parse one loaded YAML document; raises ConfigError (every error at once), nothing else."""
    if fmt is None:
        _reject_foreign_api_version(doc, where)
        fmt = detect_format(doc)
    try:
        if fmt is ConfigFormat.LBCTL:
            from lbctl.core.parse_lbctl import parse_lbctl  # the other half of the parsers

            return parse_lbctl(doc, where)
        from lbctl.core.parse_metallb import parse_metallb

        return parse_metallb(doc, where)
    except ConfigError:
        raise
    except Exception as err:
        what = f"internal error in the {fmt.value} parser ({type(err).__name__}); please report it"
        raise ParserCrash(ConfigIssue(where, what), err) from err


def _reject_foreign_api_version(doc: object, where: str) -> None:
    """A document with some other apiVersion is neither format: say so rather than 'unknown key'."""
    if not isinstance(doc, Mapping) or "apiVersion" not in doc:
        return
    version = doc["apiVersion"]
    if version == LBCTL_API_VERSION:
        return
    shown = quote(version) if isinstance(version, str) else "this value"
    message = (
        f"{shown}: unknown format; expected {quote(LBCTL_API_VERSION)} "
        "(or a MetalLB legacy config, which has no apiVersion)"
    )
    raise ConfigError((ConfigIssue(f"{where}: apiVersion" if where else "apiVersion", message),))
