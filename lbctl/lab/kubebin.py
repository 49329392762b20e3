"""Where the control plane's binaries are: tools/kube/build.sh builds them once per machine into
a cache outside the clone and prints the directory; used by the control plane and the lab."""

from __future__ import annotations

import os
import subprocess
from functools import cache
from pathlib import Path

BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "kube" / "build.sh"
NAMES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy")
BUILD_TIMEOUT = 3600.0  # a cold build takes minutes on 2 cores; only a bound


class KubeBinError(RuntimeError):
    """The binaries are missing and could not be built."""


@cache
def ensure() -> Path:
    """The directory holding the binaries: $LBCTL_KUBE_BIN if set, else what build.sh prints
    (a no-op when the cache is warm)."""
    if override := os.environ.get("LBCTL_KUBE_BIN"):
        found = Path(override)
    else:
        if not BUILD_SCRIPT.exists():
            raise KubeBinError(
                f"no {BUILD_SCRIPT}: set LBCTL_KUBE_BIN to a directory holding {', '.join(NAMES)}"
            )
        try:
            # Its progress (stderr) goes where ours goes: a first build takes minutes.
            done = subprocess.run(
                [str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, timeout=BUILD_TIMEOUT,
                check=False,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as err:
            raise KubeBinError(f"running {BUILD_SCRIPT}: {err}") from err
        if done.returncode != 0:
            raise KubeBinError(f"{BUILD_SCRIPT} failed with exit code {done.returncode}")
        found = Path(done.stdout.strip().splitlines()[-1])
    missing = [n for n in NAMES if not (found / n).exists()]
    if missing:
        raise KubeBinError(f"{found} lacks {', '.join(missing)}")
    return found


def versions(directory: Path) -> dict[str, str]:
    """Each binary's `--version` line."""
    out: dict[str, str] = {}
    for name in NAMES:
        done = subprocess.run(
            [str(directory / name), "--version"], capture_output=True, text=True, timeout=10,
            check=False,
        )  # fmt: skip
        out[name] = (
            (done.stdout or done.stderr).strip().splitlines()[0]
            if done.stdout or done.stderr
            else "?"
        )
    return out
