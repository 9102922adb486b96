"""Plain two-node namespace fixtures for testing the runtime and the pod driver on their own.

The nodes are bare network namespaces (prefix cns4-) joined by a veth pair, with their own state
dirs, reached through the netns provider's NetnsNode but made here, without a lab; the plugin
is the reference ptp with host-local, as any runtime would run them.
"""
from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.api import NetworkSpec
from lab.nodes.providers.netns import NetnsNode

REFERENCE_CNI = "/usr/lib/cni"


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def ptp_config(node: str, index: int, state_dir: str, version: str = "1.0.0") -> dict:
    return {
        "cniVersion": version, "name": "t4net", "type": "ptp", "mtu": 1400,
        "ipam": {"type": "host-local", "dataDir": f"{state_dir}/ipam",
                 "ranges": [[{"subnet": f"10.251.{index}.0/24"}]],
                 "routes": [{"dst": "0.0.0.0/0"}]},
    }


@pytest.fixture
def two_nodes(tmp_path: Path) -> Iterator[list[NetnsNode]]:
    tag = secrets.token_hex(3)
    nodes = []
    try:
        for i in (1, 2):
            ns = f"cns4-{tag}-n{i}"
            _sh("ip", "netns", "add", ns)
            state = tmp_path / f"node{i}"
            state.mkdir()
            nodes.append(NetnsNode(f"node{i}", f"10.250.0.{i}", str(state), ns))
        a, b = nodes
        _sh("ip", "link", "add", f"c4{tag}a", "netns", a.netns, "type", "veth",
            "peer", "name", f"c4{tag}b", "netns", b.netns)
        for node, link in ((a, f"c4{tag}a"), (b, f"c4{tag}b")):
            for argv in (["ip", "link", "set", "lo", "up"], ["ip", "link", "set", link, "up"],
                         ["ip", "addr", "add", f"{node.address}/24", "dev", link]):
                node.run(argv).check()
        yield nodes
    finally:
        for ns in [f"cns4-{tag}-n1", f"cns4-{tag}-n2"]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture
def ptp_spec(two_nodes: list[NetnsNode]) -> NetworkSpec:
    return NetworkSpec(
        name="t4net", plugin_type="ptp", ifname="eth0", cni_path=REFERENCE_CNI,
        configs={n.name: ptp_config(n.name, i + 1, n.state_dir) for i, n in enumerate(two_nodes)},
        mtu=1400)
