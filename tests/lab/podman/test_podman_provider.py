"""The podman provider on real podman (root): a 2-node lab up, its nodes wired and reachable,
up again changing nothing, and down leaving no container, volume, switch or veth. Labs here
are named t21<random> and removed in a finally."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from lab.cluster import actions
from lab.config import parse_config
from lab.nodes.providers.podman import cmdlines
from lab.nodes.providers.podman.provider import PodmanProvider

pytestmark = [pytest.mark.root, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[3]


def _require_podman() -> None:
    if os.geteuid() != 0:
        pytest.skip("the podman provider needs root")
    missing = [tool for tool in ("podman", "runc", "nsenter", "mmdebstrap")
               if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"container nodes need {', '.join(missing)} (scripts/setup.sh installs them)")


def lab_config(tmp_path: Path, name: str):
    return parse_config({
        "lab": {"name": name, "provider": "podman", "state_dir": str(tmp_path / "state")},
        "nodes": [{"name": "node1", "role": "server"}, {"name": "node2"}],
        "network": {"underlay": ["10.96.0.0/24", "fd00:96::/64"], "pod_cidr": "10.247.0.0/16"},
        "plugin": {"path": str(REPO / "dist" / "cnilab"), "type": "cnilab"},
    })


def leftovers(provider: PodmanProvider) -> list[str]:
    """Whatever of the lab is still there: what the provider itself finds (containers,
    volumes, its switch, its host link), and any host link named after the lab."""
    links = json.loads(subprocess.run(["ip", "-j", "link", "show"], capture_output=True,
                                      text=True, check=True).stdout)
    return provider.remains() + [f"host link {link['ifname']}" for link in links
                                 if provider.lab in link["ifname"]]


def test_a_two_node_lab_comes_up_wired_and_goes_down_leaving_nothing(tmp_path):
    _require_podman()
    config = lab_config(tmp_path, "t21" + secrets.token_hex(3))
    provider = PodmanProvider(config)
    try:
        nodes = provider.provision()
        assert [(n.name, n.address) for n in nodes] == [("node1", "10.96.0.11"),
                                                        ("node2", "10.96.0.12")]
        node1, node2 = nodes
        # each node its own hostname, filesystem and processes; the lab's addresses both ways
        assert node1.run(["hostname"]).stdout.strip() == "node1"
        assert node2.run(["ping", "-c1", "-W5", "10.96.0.11"]).ok
        assert node2.run(["ping", "-6", "-c1", "-W5", "fd00:96::11"]).ok
        routes = node1.run(["ip", "route", "show", "default"]).stdout
        assert "default via 10.96.0.1 dev eth0" in routes      # the lab switch, not the host
        assert node1.run(["ping", "-c1", "-W2", "10.96.0.1"]).ok
        # a command runs inside the node's cgroup (K3s started this way must be), at its root
        assert node1.run(["cat", "/proc/self/cgroup"]).stdout.splitlines()[0].endswith(":/")
        assert node1.run(["cat", "/proc/1/comm"]).stdout.strip() == "catatonit"
        # files land in the node's filesystem, not the host's
        src = tmp_path / "hello"
        src.write_text("hi\n")
        node2.put_file(src, "/opt/cni/bin/hello", 0o640)
        assert node2.run(["stat", "-c", "%a %s", "/opt/cni/bin/hello"]).stdout.split() == [
            "640", "3"]
        assert not node1.run(["test", "-e", "/opt/cni/bin/hello"]).ok
        assert [s.state for s in provider.status()] == ["running", "running"]
        # testinfra reaches the node as the scenarios do (nsenter://PID)
        import testinfra

        import lab.nodes.testinfra_nsenter  # noqa: F401  (registers nsenter://)

        host = testinfra.get_host(node1.testinfra_url)
        assert "10.96.0.11" in host.interface("eth0").addresses
        assert host.file("/opt/cni").is_directory
        # up again: the same containers, still wired
        pids = {n.name: n.pid for n in nodes}   # type: ignore[attr-defined]
        again = provider.provision()
        assert {n.name: n.pid for n in again} == pids   # type: ignore[attr-defined]
        assert again[1].run(["ping", "-c1", "-W5", "10.96.0.11"]).ok
        assert [n.name for n in provider.nodes()] == ["node1", "node2"]
    finally:
        actions.down(config, provider=provider)
    assert leftovers(provider) == []
    assert [s.state for s in provider.status()] == ["missing", "missing"]


def test_a_node_whose_container_stopped_is_made_again_and_rewired(tmp_path):
    _require_podman()
    config = lab_config(tmp_path, "t21" + secrets.token_hex(3))
    provider = PodmanProvider(config)
    try:
        provider.provision()
        subprocess.run(provider.storage.argv("stop", "--time", "0",
                                             cmdlines.container_name(provider.lab, "node2")),
                       capture_output=True, check=True)
        assert [s.state for s in provider.status()] == ["running", "stopped"]
        nodes = provider.provision()
        assert nodes[1].run(["ping", "-c1", "-W5", "10.96.0.11"]).ok
    finally:
        provider.destroy()
    assert leftovers(provider) == []
