"""`lbctl-controller`: parse flags, set up logging, run one controller replica (runner)."""

from __future__ import annotations

import argparse
import asyncio
import os

from controller.config import DEFAULT_CONFIG_MAP
from controller.lease import default_identity
from controller.runner import Controller, Options
from lbctl.flags import host_port, object_ref, setup_logging


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lbctl-controller",
        description="Assign LoadBalancer IPs from the pool ConfigMap and explain on each Service.",
    )
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then $KUBECONFIG)")
    p.add_argument(
        "--config-map",
        type=object_ref,
        default=DEFAULT_CONFIG_MAP,
        metavar="NS/NAME",
        help="the pool ConfigMap (default: %(default)s)",
    )
    p.add_argument(
        "--lb-class",
        default=None,
        help="handle only Services with exactly this loadBalancerClass "
        "(default: only Services without one)",
    )
    p.add_argument(
        "--metrics-bind-address",
        type=host_port,
        default=("0.0.0.0", 7472),
        metavar="HOST:PORT",
        help="serve /metrics, /livez and /readyz here (default: 0.0.0.0:7472; port 0 picks one)",
    )
    p.add_argument("--instance", help="reportingInstance of Events (default: hostname)")
    p.add_argument(
        "--leader-elect",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="campaign for the lbctl-controller Lease; only the holder writes (default: on)",
    )
    p.add_argument(
        "--namespace",
        default=os.environ.get("POD_NAMESPACE") or None,
        help="namespace of the Lease (default: $POD_NAMESPACE, the namespace it runs in; else "
        "the --config-map's namespace)",
    )
    p.add_argument(
        "--identity",
        help="holder identity in the Lease (default: $POD_NAME or the hostname, plus a random "
        "suffix)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="decide and log every write it would make (the object and the patch, "
        "`dry_run_write`), make none; no leader election and no Lease either, so it can run "
        "beside a real leader",
    )
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(args.log_level)
    host, port = args.metrics_bind_address
    options = Options(
        kubeconfig=args.kubeconfig,
        config_map=args.config_map,
        lb_class=args.lb_class or None,
        metrics_host=host,
        metrics_port=port,
        instance=args.instance,
        leader_elect=args.leader_elect,
        lease_namespace=args.namespace,
        identity=args.identity or default_identity(),
        dry_run=args.dry_run,
    )
    controller = Controller(options)
    asyncio.run(controller.run())  # kopf stops on SIGTERM/SIGINT in the main thread
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
