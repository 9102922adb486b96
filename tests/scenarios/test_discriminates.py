"""The scenario suite tells a multi-node plugin from a single-node one.

Against the reference ptp (no routes between nodes) every cross-node scenario must fail and
every same-node one pass; against our plugin (host-gw and vxlan) everything passes. Each case
brings a real 3-node netns lab up, runs `pytest scenarios/` as a user would (subprocess,
--junitxml) and judges the XML; `lab down` always runs.
"""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from example_labs import NOTHING_CHAINED

ROOT = Path(__file__).resolve().parents[2]
LAB = [sys.executable, "-c", "from lab.cli import main_entry; main_entry()"]
pytestmark = [pytest.mark.root, pytest.mark.slow]


def _outcomes(junit: Path) -> dict[str, str]:
    outcomes = {}
    for case in ET.parse(junit).iter("testcase"):
        tags = {child.tag for child in case}
        outcome = next((t for t in ("failure", "error", "skipped") if t in tags), "passed")
        outcomes[case.get("name", "")] = outcome
    return outcomes


def _run_suite(config: Path, tmp_path: Path,
               suites: tuple[str, ...] = ("scenarios/",)) -> tuple[dict[str, str], str]:
    name = f"t4{secrets.token_hex(3)}"
    common = ["-c", str(config), "--name", name]
    junit = tmp_path / f"{name}.xml"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        up = subprocess.run([*LAB, "up", *common], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, env=env)
        assert up.returncode == 0, f"lab up failed:\n{up.stdout}\n{up.stderr}"
        suite = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *suites,
             "--lab-config", str(config), "--lab-name", name, f"--junitxml={junit}",
             f"--lab-logs-dir={tmp_path / 'logs'}", "-q", "-o", "addopts=--strict-markers"],
            cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
        assert junit.exists(), f"no junit XML:\n{suite.stdout[-3000:]}\n{suite.stderr[-2000:]}"
        return _outcomes(junit), suite.stdout
    finally:
        subprocess.run([*LAB, "down", *common], cwd=ROOT, capture_output=True, timeout=120,
                       env=env)
        leftovers = [n for n in os.listdir("/run/netns") if n.startswith(f"cnilab-{name}-")]
        assert not leftovers, f"lab down left {leftovers}"


def test_reference_ptp_fails_cross_node_and_passes_same_node(tmp_path):
    outcomes, output = _run_suite(ROOT / "examples" / "netns-ptp.toml", tmp_path)
    cross = {n: o for n, o in outcomes.items() if "cross_node" in n}
    same = {n: o for n, o in outcomes.items() if "same_node" in n}
    assert len(cross) >= 5 and len(same) >= 3, f"suite shape changed: {sorted(outcomes)}"
    assert all(o == "failure" for o in cross.values()), f"ptp passed cross-node: {cross}"
    assert all(o == "passed" for o in same.values()), f"ptp failed same-node: {same}\n{output}"
    assert outcomes["test_no_stray_pod_host_interface_lease_or_namespace"] == "passed", output
    assert (tmp_path / "logs").is_dir() and any((tmp_path / "logs").iterdir()), (
        "failing scenarios attached no `lab logs` tarball")
    # each failure says why, not only what: ptp leaves no route to the other node's pods
    assert "diagnosis: node1 has no route to 10.244.1." in output, output[-3000:]
    assert "no reply even to small packets, so this is not about the MTU" in output
    assert "no reachability, so no throughput to measure" in output
    import tarfile

    tarball = next((tmp_path / "logs").rglob("*cross_node_pod_to_pod_icmp*.tar.gz"))
    with tarfile.open(tarball) as tar:
        calls = next(m for m in tar.getmembers() if m.name.endswith("/plugin-calls.txt"))
        text = tar.extractfile(calls).read().decode()  # type: ignore[union-attr]
    assert " ADD " in text and "rc=0" in text, text[:500]


@pytest.mark.parametrize("example", ["netns-hostgw.toml", "netns-vxlan.toml",
                                     "netns-dualstack.toml", "netns-vxlan-v6.toml"])
def test_cnilab_passes_every_scenario(example, tmp_path):
    plugin = ROOT / "dist" / "cnilab"
    if not plugin.exists():
        built = subprocess.run([sys.executable, "-m", "plugin.build"], cwd=ROOT,
                               capture_output=True, text=True, timeout=300)
        if built.returncode != 0 or not plugin.exists():
            pytest.skip(f"dist/cnilab could not be built: {built.stderr[-500:]}")
    outcomes, output = _run_suite(ROOT / "examples" / example, tmp_path)
    bad = {n: o for n, o in outcomes.items()
           if o != "passed" and NOTHING_CHAINED.get(n) != o}
    assert len(outcomes) >= 15, f"suite shape changed: {sorted(outcomes)}"
    assert not bad, f"cnilab ({example}) did not pass: {bad}\n{output[-4000:]}"
    from lab.config import load_config

    for family in load_config(ROOT / "examples" / example).network.families:
        ran = [n for n in outcomes if f"[v{family}]" in n and "cross_node" in n]
        assert len(ran) >= 5, f"no cross-node [v{family}] scenarios ran: {sorted(outcomes)}"


def test_reference_ptp_on_a_dual_stack_lab_is_judged_per_family(tmp_path):
    """Same-node passes and cross-node fails in both families, each reported as [v4]/[v6]."""
    outcomes, output = _run_suite(ROOT / "examples" / "netns-ptp-dualstack.toml", tmp_path)
    for family in ("v4", "v6"):
        same = {n: o for n, o in outcomes.items() if "same_node" in n and f"[{family}]" in n}
        cross = {n: o for n, o in outcomes.items() if "cross_node" in n and f"[{family}]" in n}
        assert len(same) >= 4 and len(cross) >= 5, f"no [{family}] ids: {sorted(outcomes)}"
        assert all(o == "passed" for o in same.values()), f"ptp failed same-node: {same}"
        assert all(o == "failure" for o in cross.values()), f"ptp passed cross-node: {cross}"
    assert "diagnosis: node1 has no route to fd00:244:0:1::" in output, output[-3000:]
    assert outcomes["test_no_stray_pod_host_interface_lease_or_namespace"] == "passed", output


def test_one_range_for_every_node_fails_cross_node_by_name(tmp_path):
    """The blog post's ptp-conf: one host-local subnet in the config, so each node hands out
    the same addresses. A cross-node probe then reaches a pod of its own node with the same
    address (an ICMP reply comes!): every cross-node scenario must fail all the same, naming
    the shared address."""
    config = tmp_path / "one-range.toml"
    config.write_text(
        '[lab]\nname = "onerange"\nprovider = "netns"\n'
        '[[nodes]]\nname = "node1"\nrole = "server"\n[[nodes]]\nname = "node2"\n'
        '[network]\nunderlay = "10.92.0.0/24"\npod_cidr = "10.244.0.0/16"\n'
        '[plugin]\npath = "/usr/lib/cni/ptp"\n'
        '[plugin.config]\ncniVersion = "0.4.0"\nname = "ptp-conf"\n'
        '[plugin.config.ipam]\ntype = "host-local"\nsubnet = "192.168.1.0/24"\n')
    # the cross-node suite alone: the first pod on each node gets 192.168.1.2, and so on
    outcomes, output = _run_suite(config, tmp_path, ("scenarios/test_cross_node.py",))
    cross = {n: o for n, o in outcomes.items() if "cross_node" in n and o != "skipped"}
    assert len(cross) >= 5, f"suite shape changed: {sorted(outcomes)}"
    assert all(o == "failure" for o in cross.values()), f"passed cross-node: {cross}"
    assert "one address handed out twice" in output, output[-3000:]
    assert "a reply came, but not from" in output, output[-3000:]
