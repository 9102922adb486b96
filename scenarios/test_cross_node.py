"""Pods on different nodes reach each other: what a multi-node CNI plugin is for. Every
scenario runs in each family the lab has (`[v4]`, `[v6]` in the test id)."""
from __future__ import annotations

import itertools

import pytest

from .support import address, expect, failures_at_once, iperf3_gbits


def test_cross_node_pod_to_pod_icmp_both_directions(probe, cluster, two_nodes, pod_per_node,
                                                    family):
    probe.both_ways(*(pod_per_node[n.name] for n in two_nodes),
                    lambda src, dst: probe.pod_to_pod(cluster, src, dst, family))


def test_cross_node_pod_to_pod_tcp_both_directions(probe, cluster, two_nodes, pod_per_node,
                                                   family):
    probe.both_ways(*(pod_per_node[n.name] for n in two_nodes),
                    lambda src, dst: probe.pod_to_pod(cluster, src, dst, family, "tcp"))


def test_cross_node_node_reaches_pods_on_other_nodes(probe, cluster, pod_per_node, family):
    pairs = [(node, pod) for node in cluster.nodes() for pod in pod_per_node.values()
             if pod.node != node.name]
    failed = failures_at_once(lambda n, p: probe.node_to_pod(cluster, n, p, family), pairs)
    expect(not failed, "\n".join(failed))


def test_cross_node_full_mesh_icmp(probe, cluster, pod_per_node, family):
    if len(pod_per_node) < 3:
        pytest.skip("the full mesh needs 3 nodes")
    pairs = list(itertools.permutations(pod_per_node.values(), 2))
    failed = failures_at_once(lambda a, b: probe.pod_to_pod(cluster, a, b, family), pairs)
    expect(not failed, f"{len(failed)} of {len(pairs)} pod pairs without ICMP:\n"
                       + "\n".join(failed))


def test_cross_node_full_size_packets_pass(probe, cluster, two_nodes, pod_per_node, family):
    """The pod MTU is honest: a full-size, don't-fragment packet crosses the overlay."""
    probe.full_size(cluster, *(pod_per_node[n.name] for n in two_nodes), family)


def test_cross_node_throughput_pod_to_pod_vs_node_to_node(probe, cluster, two_nodes, pod_per_node,
                                                          family, request):
    """Recorded, not asserted beyond "traffic flowed": see the report's properties."""
    # user_properties reach --junitxml in every junit_family (record_property warns on xunit2)
    def record_property(name, value):
        request.node.user_properties.append((name, value))

    n1, n2 = two_nodes
    a, b = pod_per_node[n1.name], pod_per_node[n2.name]
    ip = address(b, family)
    unreachable = probe.pod_to_pod(cluster, a, b, family)
    expect(not unreachable, "no reachability, so no throughput to measure (iperf3 not run): "
                            + unreachable)
    pods = iperf3_gbits(a.exec, b.exec, ip)
    nodes = iperf3_gbits(n1.run, n2.run, n2.address)
    record_property(f"pod_to_pod_gbits_v{family}", round(pods, 2))
    record_property("node_to_node_gbits", round(nodes, 2))
    ratio = pods / nodes if nodes else 0.0
    record_property(f"pod_over_node_ratio_v{family}", round(ratio, 3))
    print(f"\n  iperf3 1 stream {n1.name} -> {n2.name} (pods over IPv{family})\n"
          f"  pod -> pod   {pods:7.2f} Gbit/s\n  node -> node {nodes:7.2f} Gbit/s\n"
          f"  ratio        {ratio:7.3f}")
    expect(nodes > 0, f"iperf3 between the nodes {n1.name} -> {n2.name} moved nothing")
    expect(pods > 0, f"iperf3 pod {a.name}@{n1.name} -> {b.name}@{n2.name} moved nothing")
