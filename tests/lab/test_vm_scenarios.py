"""End to end on real VMs, as a user runs it: `lab up` with the libvirt provider, the scenario
suites across two VMs (pods as namespaces inside them, cross-node over the lab network), then
`lab down` leaves nothing behind."""
from __future__ import annotations

import re
import secrets
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from vm_lab import LAB_PREFIX, REPO, free_subnet, require_vm_host

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.timeout(2400)]

BIN = Path(sys.executable).parent


def _lab(*args: str, config: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    # -c first: after `exec NODE --` everything is the node's command line
    return subprocess.run([str(BIN / "lab"), "-c", str(config), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, check=False)


def _vm_config(tmp_path: Path, backend: str) -> tuple[Path, str]:
    """examples/libvirt-hostgw.toml with a unique lab name, a free subnet and test sizes."""
    name = LAB_PREFIX + secrets.token_hex(3)
    text = (REPO / "examples" / "libvirt-hostgw.toml").read_text()
    text = re.sub(r'(?m)^name = "vmhostgw"', f'name = "{name}"\nstate_dir = "{tmp_path}/state"',
                  text)
    text = re.sub(r'(?m)^underlay = "[^"]+"', f'underlay = "{free_subnet()}"', text)
    text = re.sub(r"(?m)^memory_mib = \d+", "memory_mib = 768\nboot_timeout = 480", text)
    text = re.sub(r'(?m)^backend = "host-gw"', f'backend = "{backend}"', text)
    text = text.replace('path = "dist/cnilab"', f'path = "{REPO}/dist/cnilab"')
    assert name in text and str(tmp_path) in text
    config = tmp_path / "lab.toml"
    config.write_text(text)
    return config, name


def _outcomes(junit: Path) -> dict[str, str]:
    return {test: outcome for test, (outcome, _) in _read_junit(junit).items()}


def _read_junit(junit: Path) -> dict[str, tuple[str, str]]:
    """Each test's outcome and, for a skip, its reason."""
    results = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        failed = case.find("failure") is not None or case.find("error") is not None
        skip = case.find("skipped")
        outcome = "failed" if failed else "skipped" if skip is not None else "passed"
        reason = (skip.get("message") or "") if skip is not None else ""
        results[case.get("name", "")] = (outcome, reason)
    return results


# Skips the two-VM host-gw lab may give, each only with its true reason: two VMs keep the test
# within CI's time (no 3-node full mesh), and the lab's network chains no plugin after ours.
EXPECTED_SKIPS = {
    "test_cross_node_full_mesh_icmp": "the full mesh needs 3 nodes",
    **{name: "the network chains no" for name in (
        "test_tuning_sets_its_sysctls_in_every_pod",
        "test_tuning_gives_the_pod_the_mac_the_runtime_asks_for",
        "test_bandwidth_shapes_the_pods_host_side_as_asked",
        "test_portmap_forwards_the_host_port_to_the_pod_until_del")},
}


def test_scenarios_pass_across_two_vms_and_down_leaves_nothing(tmp_path):
    require_vm_host()
    from lab.nodes.providers.libvirt.image_build import build_image

    build_image(report=print)     # the current recipe's image (a cached one is reused)
    build = subprocess.run([sys.executable, "-m", "plugin.build"], cwd=REPO,
                           capture_output=True, text=True, check=False)
    assert build.returncode == 0, build.stderr
    config, name = _vm_config(tmp_path, "host-gw")
    try:
        up = _lab("up", config=config, timeout=900)
        assert up.returncode == 0, up.stdout + up.stderr
        junit = tmp_path / "junit.xml"
        # every suite but the runtime contract checks (many ADDs at once, every version):
        # they run the same emulation code netns labs judge, and cost minutes over TCG's SSH
        suite = subprocess.run([str(BIN / "pytest"), "scenarios/", "--lab-config", str(config),
                                "--deselect", "scenarios/test_cni_contract.py",
                                "-p", "no:cacheprovider", f"--junitxml={junit}", "-q"],
                               cwd=REPO, capture_output=True, text=True, timeout=1800,
                               check=False)
        outcomes = _outcomes(junit)
        failed = sorted(t for t, (o, why) in _read_junit(junit).items()
                        if o != "passed" and not (
                            o == "skipped"
                            and EXPECTED_SKIPS.get(t.split("[", 1)[0], "\0") in why))
        assert len(outcomes) >= 15, suite.stdout[-3000:]
        assert any("cross_node" in t for t in outcomes)
        assert not failed, f"{failed}\n{suite.stdout[-6000:]}"
    finally:
        down = _lab("down", config=config, timeout=300)
    assert down.returncode == 0, down.stdout + down.stderr
    domains = subprocess.run(["virsh", "-c", "qemu:///system", "list", "--all", "--name"],
                             capture_output=True, text=True, check=False).stdout
    networks = subprocess.run(["virsh", "-c", "qemu:///system", "net-list", "--all",
                               "--name"], capture_output=True, text=True, check=False).stdout
    assert f"cnilab-{name}" not in domains + networks


def test_a_dual_stack_vm_lab_is_judged_per_family(tmp_path):
    """Two VMs with a v4 and a v6 underlay (v6 static, kept by networkd), the reference ptp
    dual-stack: same-node scenarios pass and cross-node ones fail in both families."""
    require_vm_host()
    from lab.nodes.providers.libvirt.image_build import build_image

    build_image(report=print)
    config, _ = _vm_config(tmp_path, "host-gw")
    text = config.read_text()
    subnet = re.search(r'(?m)^underlay = "([^"]+)"', text).group(1)  # type: ignore[union-attr]
    v6 = f"fd00:{subnet.split('.')[2]}::/64"
    text = text.replace(f'underlay = "{subnet}"', f'underlay = ["{subnet}", "{v6}"]')
    text = text.replace('pod_cidr = "10.244.0.0/16"',
                        'pod_cidr = ["10.244.0.0/16", "fd00:244::/56"]')
    plugin = text[text.index("[plugin]"):]
    text = text.replace(plugin, (
        '[plugin]\npath = "/usr/lib/cni/ptp"\n\n[plugin.config]\ncniVersion = "1.0.0"\n'
        'name = "ptp"\nmtu = 1500\n\n[plugin.config.ipam]\ntype = "host-local"\n'
        'ranges = [[{ subnet = "${NODE_POD_SUBNET4}" }], [{ subnet = "${NODE_POD_SUBNET6}" }]]\n'
        'routes = [{ dst = "0.0.0.0/0" }, { dst = "::/0" }]\n'))
    config.write_text(text)
    try:
        up = _lab("up", config=config, timeout=900)
        assert up.returncode == 0, up.stdout + up.stderr
        addrs = _lab("exec", "n2", "--", "ip", "-o", "-6", "addr", "show", "scope", "global",
                     config=config, timeout=120)
        assert v6.replace("::/64", "::12/64") in addrs.stdout, addrs.stdout
        junit = tmp_path / "junit.xml"
        # what this test judges: same-node and cross-node traffic, per family
        subprocess.run([str(BIN / "pytest"), "scenarios/test_same_node.py",
                        "scenarios/test_cross_node.py", "--lab-config", str(config),
                        "-p", "no:cacheprovider", f"--junitxml={junit}", "-q"],
                       cwd=REPO, capture_output=True, text=True, timeout=1800, check=False)
        outcomes = _outcomes(junit)
        for family in ("v4", "v6"):
            same = {t: o for t, o in outcomes.items() if "same_node" in t and f"[{family}]" in t}
            cross = {t: o for t, o in outcomes.items()
                     if "cross_node" in t and f"[{family}]" in t and "full_mesh" not in t}
            assert len(same) >= 4 and len(cross) >= 4, sorted(outcomes)
            assert set(same.values()) == {"passed"}, same
            assert set(cross.values()) == {"failed"}, cross
    finally:
        down = _lab("down", config=config, timeout=300)
    assert down.returncode == 0, down.stdout + down.stderr
