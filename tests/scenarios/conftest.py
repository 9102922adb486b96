"""Plain two-node namespace fixtures for testing the runtime and the pod driver on their own.

The nodes are bare network namespaces (prefix cns4-) joined by a veth pair, with their own state
dirs, so these tests need nothing from the lab provider; the plugin is the reference ptp with
host-local, as any runtime would run them.
"""
from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab.api import CommandResult, NetworkSpec

REFERENCE_CNI = "/usr/lib/cni"


@dataclass
class PlainNetnsNode:
    """The smallest api.Node: a namespace; commands keep the host's mount namespace."""

    name: str
    address: str
    state_dir: str
    netns: str

    def run(self, argv: Sequence[str], *, input: str | None = None, timeout: float = 60,
            env: dict[str, str] | None = None) -> CommandResult:
        full = ["nsenter", f"--net=/run/netns/{self.netns}", "--", *argv]
        p = subprocess.run(full, input=input, capture_output=True, text=True, timeout=timeout,
                           env=env)
        return CommandResult(tuple(argv), p.returncode, p.stdout, p.stderr)

    def put_file(self, local: Path, remote: str, mode: int = 0o755) -> None:
        shutil.copyfile(local, remote)
        Path(remote).chmod(mode)

    @property
    def testinfra_url(self) -> str:
        return f"netns://{self.netns}"


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
def two_nodes(tmp_path: Path) -> Iterator[list[PlainNetnsNode]]:
    tag = secrets.token_hex(3)
    nodes = []
    try:
        for i in (1, 2):
            ns = f"cns4-{tag}-n{i}"
            _sh("ip", "netns", "add", ns)
            state = tmp_path / f"node{i}"
            state.mkdir()
            nodes.append(PlainNetnsNode(f"node{i}", f"10.250.0.{i}", str(state), ns))
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
def ptp_spec(two_nodes: list[PlainNetnsNode]) -> NetworkSpec:
    return NetworkSpec(
        name="t4net", plugin_type="ptp", ifname="eth0", cni_path=REFERENCE_CNI,
        configs={n.name: ptp_config(n.name, i + 1, n.state_dir) for i, n in enumerate(two_nodes)},
        mtu=1400)
