"""`lbctl-speaker`: parse flags, set up logging, build the L2 announcer and run one speaker
(speaker.runner) until SIGTERM or SIGINT, which hands this node's IPs over first."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

# kopf imports the `kubernetes` client whenever it is installed (kopf._cogs.helpers.thirdparty),
# only to recognise its model classes, which the speaker never hands to kopf; it would be 15 MiB
# of the speaker's RSS (docs/performance.md, Speaker RSS). Hidden while kopf loads: an import of
# a module whose sys.modules entry is None fails, and kopf goes on without it. (Not when it is
# loaded already: a test process that imported the controller.)
HIDE_KUBERNETES = "kubernetes" not in sys.modules
if HIDE_KUBERNETES:
    sys.modules["kubernetes"] = None  # type: ignore[assignment]
import kopf  # noqa: E402, F401

from lbctl.flags import host_port, object_ref, setup_logging  # noqa: E402
from speaker.runner import DEFAULT_PROBE_PORT, Options, Speaker  # noqa: E402

if HIDE_KUBERNETES:
    del sys.modules["kubernetes"]  # lbctl.restclient may need it, for an exec-plugin kubeconfig


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lbctl-speaker",
        description="Announce this node's share of the LoadBalancer IPs: ARP/NDP on layer 2, "
        "routes to the site's routers over BGP (through ExaBGP).",
    )
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then $KUBECONFIG)")
    p.add_argument(
        "--node-name",
        default=os.environ.get("NODE_NAME"),
        help="this node's name (default: $NODE_NAME)",
    )
    p.add_argument(
        "--config-map",
        type=object_ref,
        default=("lbctl-system", "lbctl-config"),
        metavar="NS/NAME",
        help="the pool ConfigMap (default: lbctl-system/lbctl-config)",
    )
    p.add_argument("--lb-class", default=None, help="announce only Services of this class")
    p.add_argument(
        "--probe-bind-address", type=host_port, default=("0.0.0.0", DEFAULT_PROBE_PORT),
        metavar="HOST:PORT",
        help="UDP address for liveness probes between speakers (default: 0.0.0.0:%(default)s); "
        "every speaker must use the same port",
    )  # fmt: skip
    p.add_argument(
        "--metrics-bind-address", type=host_port, default=("0.0.0.0", 7472), metavar="HOST:PORT",
        help="serve /metrics, /livez and /readyz here (default: 0.0.0.0:7472)",
    )  # fmt: skip
    p.add_argument(
        "--bgp-dir", default="/run/lbctl-speaker/bgp", metavar="DIR",
        help="private directory (made 0700) for ExaBGP's configuration, control sockets and logs "
        "(default: %(default)s)",
    )  # fmt: skip
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not args.node_name:
        print("lbctl-speaker: --node-name or $NODE_NAME is required", file=sys.stderr)
        return 2
    setup_logging(args.log_level)
    options = Options(
        node=args.node_name,
        kubeconfig=args.kubeconfig,
        config_map=args.config_map,
        lb_class=args.lb_class,
        probe_host=args.probe_bind_address[0],
        probe_port=args.probe_bind_address[1],
        metrics_host=args.metrics_bind_address[0],
        metrics_port=args.metrics_bind_address[1],
        bgp_dir=args.bgp_dir,
    )
    speaker = Speaker(options)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    speaker.start()
    speaker.wait(stop)
    logging.getLogger("lbctl.speaker").info("speaker_stopping graceful=%s", stop.is_set())
    speaker.stop(graceful=stop.is_set())
    return 0 if speaker.error is None else 1


if __name__ == "__main__":
    raise SystemExit(main())
