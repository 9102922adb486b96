"""Pods on one node reach each other, and the node reaches its pods, in every family the lab
runs (`[v4]`, `[v6]` in the test id)."""
from __future__ import annotations

from .support import expect, failures_at_once


def test_same_node_pod_to_pod_icmp_both_directions(probe, cluster, neighbours, family):
    probe.both_ways(*neighbours, lambda src, dst: probe.pod_to_pod(cluster, src, dst, family))


def test_same_node_pod_to_pod_tcp_both_directions(probe, cluster, neighbours, family):
    probe.both_ways(*neighbours,
                    lambda src, dst: probe.pod_to_pod(cluster, src, dst, family, "tcp"))


def test_same_node_node_reaches_its_pods(probe, cluster, pod_per_node, family):
    failed = failures_at_once(lambda node: probe.node_to_pod(cluster, node,
                                                             pod_per_node[node.name], family),
                              ((node,) for node in cluster.nodes()))
    expect(not failed, "\n".join(failed))


def test_same_node_full_size_packets_pass(probe, cluster, neighbours, family):
    probe.full_size(cluster, *neighbours, family)
