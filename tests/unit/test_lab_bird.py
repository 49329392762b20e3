"""The router's BIRD configuration."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from lbctl.lab import bird, plan


def test_router_config_peers_passively_with_each_node_in_its_family() -> None:
    conf = bird.router_config([plan.node_host(1).addr4, plan.node_host(2).addr6])
    assert "neighbor 192.0.2.11 as 64501; passive; ipv4" in conf
    assert "local 2001:db8::1 as 64500; neighbor 2001:db8::12 as 64501; passive; ipv6" in conf
    assert conf.count("merge paths on") == 2


@pytest.mark.skipif(shutil.which("bird") is None, reason="bird2 not installed")
def test_router_config_parses(tmp_path: Path) -> None:
    conf = tmp_path / "bird.conf"
    conf.write_text(bird.router_config([plan.node_host(i).addr4 for i in (1, 2, 3)]))
    subprocess.run(["bird", "-p", "-c", str(conf)], check=True, timeout=10)
