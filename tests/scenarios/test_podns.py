"""The namespace pod driver on two plain netns nodes with the reference ptp + host-local."""
from __future__ import annotations

import contextlib
import ipaddress
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import replace

import pytest

from lab.api import Cluster, LabError
from lab.drivers.podns import NamespacePodCluster
from lab.runtime.cni_runtime import CniCallError

pytestmark = pytest.mark.root


def _netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


@pytest.fixture
def ns_cluster(two_nodes, ptp_spec) -> Iterator[NamespacePodCluster]:
    cluster = NamespacePodCluster(f"t4{secrets.token_hex(3)}", list(two_nodes), ptp_spec)
    try:
        yield cluster
    finally:
        for pod in cluster.pods():
            with contextlib.suppress(LabError):
                cluster.delete_pod(pod)
        for ns in _netns_names():
            if ns.startswith(f"cnilab-{cluster.name}-"):
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_cluster_satisfies_the_scenario_interface(ns_cluster):
    cluster: Cluster = ns_cluster  # mypy checks the protocol; this checks the attributes
    assert (cluster.network_name, cluster.plugin_type, cluster.mtu) == ("t4net", "ptp", 1400)
    assert [n.name for n in cluster.nodes()] == ["node1", "node2"]


def test_pods_get_an_ip_from_their_node_and_are_found_again_from_the_caches(ns_cluster):
    a = ns_cluster.create_pod("a", "node1")
    b = ns_cluster.create_pod("b", "node2")
    assert ipaddress.ip_address(a.ip) in ipaddress.ip_network(ns_cluster.pod_subnet("node1"))
    assert ipaddress.ip_address(b.ip) in ipaddress.ip_network(ns_cluster.pod_subnet("node2"))
    assert f"cnilab-{ns_cluster.name}-pod-a" in _netns_names()
    found = {p.name: p for p in ns_cluster.pods()}
    assert set(found) == {"a", "b"}
    assert (found["a"].ip, found["a"].node, found["a"].attachment) == (a.ip, "node1",
                                                                      a.attachment)
    out = a.exec(["ip", "-o", "-4", "addr", "show", "dev", "eth0"])
    assert out.ok and f"{a.ip}/" in out.stdout
    assert ns_cluster.cni_check(a).ok
    with pytest.raises(LabError, match="already exists"):
        ns_cluster.create_pod("a", "node2")


def test_same_node_pods_reach_each_other(ns_cluster):
    a = ns_cluster.create_pod("a", "node1")
    b = ns_cluster.create_pod("b", "node1")
    assert a.exec(["ping", "-c1", "-W1", b.ip]).ok
    assert b.exec(["ping", "-c1", "-W1", a.ip]).ok


def test_delete_removes_namespace_veth_and_lease_and_twice_is_fine(ns_cluster):
    before = ns_cluster.host_interfaces("node1")
    pod = ns_cluster.create_pod("a", "node1")
    assert len(ns_cluster.host_interfaces("node1")) == len(before) + 1
    assert ns_cluster.ipam_leases("node1")[pod.ip] == pod.attachment.container_id
    ns_cluster.delete_pod(pod)
    assert ns_cluster.host_interfaces("node1") == before
    assert pod.ip not in ns_cluster.ipam_leases("node1")
    assert f"cnilab-{ns_cluster.name}-pod-a" not in _netns_names()
    assert ns_cluster.pods() == []
    ns_cluster.delete_pod(pod)


def test_host_interfaces_leave_out_the_underlay(ns_cluster, two_nodes):
    links = subprocess.run(["ip", "-n", two_nodes[0].netns, "-o", "link", "show", "type", "veth"],
                           capture_output=True, text=True).stdout
    assert links.strip()  # the underlay is a veth ...
    assert ns_cluster.host_interfaces("node1") == []  # ... and is not the plugin's


def test_check_fails_with_the_plugins_message_after_route_tampering(ns_cluster):
    pod = ns_cluster.create_pod("a", "node1")
    assert pod.exec(["ip", "route", "del", "default"]).ok
    res = ns_cluster.cni_check(pod)
    assert not res.ok
    assert "CNI CHECK failed" in res.stderr and "node1" in res.stderr


def test_stray_attachment_is_not_a_pod_and_gc_before_1_1_0_is_skipped(ns_cluster):
    live = ns_cluster.create_pod("live", "node1")
    stray = ns_cluster.add_stray_attachment("node1")
    try:
        assert [p.name for p in ns_cluster.pods()] == ["live"]
        assert stray.container_id in ns_cluster.ipam_leases("node1").values()
        res = ns_cluster.cni_gc("node1")
        assert res.ok and "predates 1.1.0" in res.stderr
    finally:
        ns_cluster.delete_stray_attachment(stray)
    assert stray.container_id not in ns_cluster.ipam_leases("node1").values()
    assert set(ns_cluster.ipam_leases("node1").values()) == {live.attachment.container_id}
    assert not any("stray" in ns for ns in _netns_names() if ns_cluster.name in ns)


def test_failed_add_leaves_no_namespace_behind(ns_cluster, ptp_spec, two_nodes):
    broken = replace(ptp_spec, configs={**ptp_spec.configs,
                                        "node1": {**ptp_spec.configs["node1"],
                                                  "ipam": {"type": "host-local"}}})
    cluster = NamespacePodCluster(ns_cluster.name, list(two_nodes), broken)
    with pytest.raises(CniCallError):
        cluster.create_pod("a", "node1")
    assert not any(ns.startswith(f"cnilab-{ns_cluster.name}-") for ns in _netns_names())


def test_bad_names_are_clear_errors(ns_cluster):
    with pytest.raises(LabError, match="invalid pod name"):
        ns_cluster.create_pod("Bad_Name", "node1")
    with pytest.raises(LabError, match="no node named 'node9'"):
        ns_cluster.create_pod("a", "node9")


def test_pod_namespaces_are_this_labs_only(ns_cluster):
    """The leak audit judges these: another lab's pod, or anyone's namespace on the host,
    must never count as this suite's leak (three false failures in six runs before)."""
    node = ns_cluster.nodes()[0].name
    foreign = [f"cnilab-t4other{secrets.token_hex(2)}-pod-other1",
               f"someone-{secrets.token_hex(3)}"]
    for ns in foreign:
        subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        before = ns_cluster.pod_namespaces(node)
        assert not set(foreign) & set(before)
        pod = ns_cluster.create_pod("audited", node)
        made = f"{ns_cluster.pod_prefix}audited"
        assert ns_cluster.pod_namespaces(node) == sorted([*before, made])
        ns_cluster.delete_pod(pod)
        assert ns_cluster.pod_namespaces(node) == before
    finally:
        for ns in foreign:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
