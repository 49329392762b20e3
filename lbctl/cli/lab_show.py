"""What `lbctl lab up` prints once the lab is ready: what runs, and how to use it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from lbctl.lab.daemon import LabFiles


def print_usage(info: dict[str, Any], run_dir: Path, *, current: bool) -> None:
    controller = info["controller"]
    runid = info["runid"]
    print(f"lab {runid} is up: API server {info['api']}, nodes {', '.join(info['nodes'])}")
    for name, version in info.get("versions", {}).items():
        print(f"  {name}: {version}")
    if controller["running"]:
        print(f"controller: lbctl-controller running (pid {controller['pid']})")
        speakers = info.get("speakers", {})
        print(f"speakers: lbctl-speaker on {', '.join(sorted(speakers)) or 'no node'}")
    else:
        print(f"controller: not running: {controller['note']}")
        print("  (nothing assigns addresses: Services stay <pending>)")
    kubectl = Path(sys.executable).parent / "kubectl"
    print(f"logs: {LabFiles(run_dir).logs}/")
    print("\nuse it:")
    print(f"  export KUBECONFIG={info['kubeconfig']}")
    print(f"  {kubectl} get nodes")
    print(f"  {kubectl} get svc")
    which = "" if current else f" --runid {runid}"  # a --parallel run is not the current one
    print(f"  lbctl lab demo{which}      # a LoadBalancer Service, end to end")
    print(f"  lbctl lab down{which}      # stop everything")
