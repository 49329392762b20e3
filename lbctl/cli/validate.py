"""`lbctl validate PATH...`: check config files offline and report every issue; called by main.

Each PATH holds one or more YAML documents, each a ConfigMap manifest (data["config.yaml"] in
lbctl's format, data["config"] in MetalLB's) or a bare config document. Text output is one line
per issue, `FILE: [doc N: ]<issue>`, then a summary; `--output json` prints the parsed model.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace

from lbctl.cli.common import EXIT_INVALID, EXIT_OK, EXIT_USAGE, display_name, read_bytes
from lbctl.configmap import Loaded, load_documents
from lbctl.core.lints import check_pools_against_hosts
from lbctl.core.model import ConfigError, ConfigIssue, IPAddress, ParsedConfig, Severity
from lbctl.core.render import JSONObject, config_to_json

HELP = "check configuration files (ConfigMap manifests or bare documents) without a cluster"

DESCRIPTION = """\
Check lbctl configuration offline and report every problem at once.

Each PATH is a YAML file with one or more documents (separated by ---). A document is
either a ConfigMap manifest, whose data key "config.yaml" holds lbctl's format and
"config" MetalLB's legacy format, or a bare config document: lbctl's format when it has
`apiVersion: lbctl.io/v1alpha1`, MetalLB's legacy format otherwise.

Every issue is printed on its own line as `FILE: [doc N: ]WHERE: WHAT`, warnings prefixed
`warning:`, followed by a summary line. Passwords are never printed."""

EPILOG = """\
exit codes:
  0  every document is valid (warnings allowed)
  1  some document is invalid: config errors, YAML syntax errors, a document that is not
     a mapping, an unknown format, a ConfigMap with neither data key
  2  bad arguments, or a PATH that cannot be opened

examples:
  lbctl validate config.yaml
  kubectl -n metallb-system get configmap config -o yaml | lbctl validate -
  lbctl validate --output json pools.yaml | jq '.config.pools[].size'
  lbctl validate --node-ip 192.0.2.11 --node-ip 192.0.2.12 --gateway 192.0.2.1 config.yaml"""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "validate",
        help=HELP,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "paths", nargs="+", metavar="PATH", help="a YAML file to check; - reads standard input"
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=("text", "json"),
        default="text",
        help="text: one line per issue and a summary (default); json: the parsed model of each"
        " document, with its errors and warnings (one object, or a list for several documents)",
    )
    parser.add_argument(
        "--node-ip",
        action="append",
        default=[],
        type=ipaddress.ip_address,
        metavar="IP",
        help="a node's InternalIP (repeatable): a pool holding it gets a warning",
    )
    parser.add_argument(
        "--gateway",
        action="append",
        default=[],
        type=ipaddress.ip_address,
        metavar="IP",
        help="the LAN gateway (repeatable): a pool holding it gets a warning",
    )
    parser.set_defaults(handler=run)


@dataclass(frozen=True)
class Checked:
    """One document's outcome, labelled `FILE` or `FILE: doc N`."""

    label: str
    loaded: Loaded

    @property
    def valid(self) -> bool:
        return not isinstance(self.loaded, ConfigError)

    @property
    def issues(self) -> tuple[ConfigIssue, ...]:
        if isinstance(self.loaded, ConfigError):
            return self.loaded.issues
        return self.loaded.warnings


def with_host_lints(
    loaded: Loaded, node_ips: Sequence[IPAddress], gateways: Sequence[IPAddress]
) -> Loaded:
    """Add the warnings for pools that hold a node's or the gateway's address."""
    if not isinstance(loaded, ParsedConfig) or not (node_ips or gateways):
        return loaded
    extra = check_pools_against_hosts(loaded.config, node_ips, gateways)
    return replace(loaded, warnings=loaded.warnings + extra)


def check_path(
    path: str, node_ips: Sequence[IPAddress] = (), gateways: Sequence[IPAddress] = ()
) -> list[Checked]:
    """Every document of PATH, checked; raises OSError when PATH cannot be read."""
    name = display_name(path)
    data = read_bytes(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        issue = ConfigIssue("", f"not UTF-8 text (byte {err.start}): YAML files are UTF-8")
        return [Checked(name, ConfigError((issue,)))]
    return [
        Checked(label, with_host_lints(loaded, node_ips, gateways))
        for label, loaded in load_documents(text, name)
    ]


def run(args: argparse.Namespace) -> int:
    checked: list[Checked] = []
    files = 0
    unreadable = False
    for path in args.paths:
        try:
            checked.extend(check_path(path, args.node_ip, args.gateway))
            files += 1
        except OSError as err:
            reason = err.strerror or type(err).__name__
            print(f"lbctl validate: cannot open {display_name(path)}: {reason}", file=sys.stderr)
            unreadable = True
    if args.output == "json":
        print_json(checked)
    elif files:  # a summary of nothing read would only look like a verdict
        print_text(checked, files)
    if unreadable:
        return EXIT_USAGE
    return EXIT_OK if all(c.valid for c in checked) else EXIT_INVALID


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def print_text(checked: list[Checked], files: int) -> None:
    errors = warnings = 0
    for item in checked:
        for issue in item.issues:
            print(f"{item.label}: {issue}")
            if issue.severity is Severity.WARNING:
                warnings += 1
            else:
                errors += 1
    bad = sum(not c.valid for c in checked)
    scope = f"{_plural(len(checked), 'document')} in {_plural(files, 'file')}"
    counts = f"{_plural(errors, 'error')}, {_plural(warnings, 'warning')}"
    print(f"invalid: {bad} of {scope}; {counts}" if bad else f"valid: {scope}; {counts}")


def _issue_json(issue: ConfigIssue) -> JSONObject:
    return {"severity": str(issue.severity), "where": issue.where, "message": issue.message}


def document_json(item: Checked) -> JSONObject:
    errors = [i for i in item.issues if i.severity is Severity.ERROR]
    warnings = [i for i in item.issues if i.severity is Severity.WARNING]
    loaded = item.loaded
    return {
        "source": item.label,
        "valid": item.valid,
        "errors": [_issue_json(i) for i in errors],
        "warnings": [_issue_json(i) for i in warnings],
        "config": None if isinstance(loaded, ConfigError) else config_to_json(loaded.config),
    }


def print_json(checked: list[Checked]) -> None:
    documents = [document_json(c) for c in checked]
    print(json.dumps(documents[0] if len(documents) == 1 else documents, indent=2))
