"""An isolated lab node gets a default route on its lab interface (what K3s, flannel and
kube-proxy assume), run for real in namespaces of this test's own."""
from __future__ import annotations

import secrets
import subprocess

import pytest

from lab.kube import cmdlines

pytestmark = pytest.mark.root


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@pytest.fixture
def lab_node():
    """A namespace with a lab interface (a veth whose peer sits in a second namespace, the
    'rest of the lab') holding 10.77.0.2/24 and fd77::2/64, and no default route."""
    ns, peer = f"cnwo-{secrets.token_hex(3)}", f"cnwp-{secrets.token_hex(3)}"
    try:
        for name in (ns, peer):
            ip("netns", "add", name)
        ip("-n", ns, "link", "add", "lab0", "type", "veth", "peer", "name", "lab1",
           "netns", peer)
        ip("-n", ns, "addr", "add", "10.77.0.2/24", "dev", "lab0")
        ip("-n", ns, "addr", "add", "fd77::2/64", "dev", "lab0", "nodad")
        ip("-n", ns, "link", "set", "lab0", "up")
        ip("-n", peer, "link", "set", "lab1", "up")
        yield ns
    finally:
        for name in (ns, peer):
            ip("netns", "del", name, check=False)


def run_in(ns: str, script: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, "sh", "-c", script], capture_output=True,
                          text=True, check=True).stdout


def test_a_node_without_a_way_out_gets_one_and_only_once(lab_node):
    script = cmdlines.default_route_on("lab0", [4, 6])
    assert run_in(lab_node, script).split() == ["IPv4", "IPv6"]
    assert "default dev lab0" in ip("-n", lab_node, "-4", "route", "show", "default").stdout
    assert "default dev lab0" in ip("-n", lab_node, "-6", "route", "show", "default").stdout
    # the Service address now has a route (kube-proxy's DNAT needs the packet to exist)
    assert "dev lab0" in ip("-n", lab_node, "route", "get", "10.43.0.1").stdout
    assert run_in(lab_node, script).split() == []          # idempotent


def test_a_real_default_route_is_left_in_charge(lab_node):
    ip("-n", lab_node, "route", "add", "default", "via", "10.77.0.1")
    assert run_in(lab_node, cmdlines.default_route_on("lab0", [4])).split() == []
    routes = ip("-n", lab_node, "-4", "route", "show", "default").stdout.splitlines()
    assert [r.strip() for r in routes] == ["default via 10.77.0.1 dev lab0"]


def test_a_node_without_the_lab_interface_is_left_alone(lab_node):
    assert run_in(lab_node, cmdlines.default_route_on("nosuch0", [4])) == ""
    assert ip("-n", lab_node, "-4", "route", "show", "default").stdout == ""
