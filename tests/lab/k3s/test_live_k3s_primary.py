"""Primary mode for real, dual-stack: `lab up` of examples/k3s-libvirt-dualstack.toml as shipped
(3 VMs, K3s with flannel off and one v4 and one v6 range per node, the plugin as the cluster
network on eth0), nodes Ready only once the plugin's conflist is in place, the scenario suites
through pods in both families (connectivity, the pod network, the leak audit), `lab down`
leaving nothing. Skips, naming what is missing, without the air-gapped inputs.

The IPv4-only primary example (k3s-libvirt-primary.toml) runs the same code with one family; it
was brought up live too (docs/k8s.md), but CI's 90 minutes hold one primary-mode lab, and this
one proves more."""
from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from live_k3s import LiveLab, assert_suite_passed, live_lab, need_after, run_scenarios

pytestmark = [pytest.mark.vm, pytest.mark.k8s, pytest.mark.slow, pytest.mark.timeout(5400)]

EXPECTED_SKIPS: dict[str, str] = {}

# What is the cluster network's own: connectivity in both families on eth0 (the pods' default
# route), the pod network, and the leak audit after them. CHECK, DEL, GC and churn run the same
# plugin code as on the Multus lab, whose test runs the whole suite; CI's 90 minutes cannot
# hold both whole suites on a 2-core TCG host.
PRIMARY_SUITES = tuple(f"scenarios/{name}" for name in (
    "test_same_node.py", "test_cross_node.py", "test_pod_network.py", "test_leak_audit.py"))


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveLab]:
    with live_lab("k3s-libvirt-dualstack.toml", tmp_path_factory.mktemp("k3s-primary"),
                  need_minutes=need_after("k3s-libvirt-airgap.toml", 1.1, 40)) as lab:
        yield lab


def test_the_plugin_is_the_cluster_network(live, record_property):
    assert "deploy the plugin as the cluster network" in live.phases, live.up_output
    assert "unpack the pod images on every node" in live.phases, live.up_output
    for phase, seconds in live.phases.items():
        record_property(f"up: {phase}", seconds)
    nodes = live.lab("exec", "node1", "--", "k3s", "kubectl", "get", "nodes", "-o", "json",
                     timeout=120)
    assert nodes.returncode == 0, nodes.stderr
    items = json.loads(nodes.stdout)["items"]
    assert sorted(i["metadata"]["name"] for i in items) == ["node1", "node2", "node3"]
    for item in items:
        ready = {c["type"]: c["status"] for c in item["status"]["conditions"]}["Ready"]
        assert ready == "True", item["metadata"]["name"]
        # dual-stack from the same [network]: a pod range and an InternalIP per family
        cidrs = item["spec"].get("podCIDRs", [])
        assert [":" in c for c in cidrs] == [False, True], cidrs
        internal = [a["address"] for a in item["status"]["addresses"]
                    if a["type"] == "InternalIP"]
        assert sorted(":" in a for a in internal) == [False, True], internal
    conf = live.lab("exec", "node2", "--", "sh", "-c",
                    "ls /etc/cni/net.d; ls /var/lib/rancher/k3s/agent/etc/cni/net.d 2>&1; "
                    "grep -c flannel /var/lib/rancher/k3s/agent/etc/containerd/config.toml",
                    timeout=120)
    assert "05-" in conf.stdout and "flannel" not in conf.stdout.split("\n")[0], conf.stdout


def test_scenarios_pass_with_the_plugin_on_eth0(live, tmp_path, record_property):
    result = run_scenarios(live, tmp_path, PRIMARY_SUITES)
    record_property("scenario suite seconds", round(result.seconds, 1))
    assert_suite_passed(result, EXPECTED_SKIPS)
    assert {"test_cross_node_full_mesh_icmp[v4]", "test_cross_node_full_mesh_icmp[v6]",
            "test_cross_node_pod_to_pod_icmp_both_directions[v6]"} <= set(result.passed)
