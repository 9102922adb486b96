"""Pods on one node reach each other, and the node reaches its pods, in every family the lab
runs (`[v4]`, `[v6]` in the test id)."""
from __future__ import annotations

from .support import address, diagnose, expect


def test_same_node_pod_to_pod_icmp_both_directions(probe, cluster, neighbours, family):
    def icmp(src, dst):
        ip = address(dst, family)
        return "" if probe.ping(src, ip).ok else probe.unreachable(
            cluster, src, ip, f"{src.name} -> {dst.name} ({ip}) on {src.node}: no ICMP reply",
            dst)

    probe.both_ways(*neighbours, icmp)


def test_same_node_pod_to_pod_tcp_both_directions(probe, cluster, neighbours, family):
    def tcp(src, dst):
        if probe.tcp_echo(src, dst, family=family) == f"pong from-{src.name}":
            return ""
        return probe.unreachable(cluster, src, address(dst, family),
                                 f"TCP {src.name} -> {dst.name} on {src.node} failed", dst)

    probe.both_ways(*neighbours, tcp)


def test_same_node_node_reaches_its_pods(probe, cluster, pod_per_node, family):
    for node in cluster.nodes():
        ip = address(pod_per_node[node.name], family)
        if not probe.node_ping(node, ip).succeeded:
            expect(False, f"{node.name} -> its pod {ip}: no reply\n"
                          + diagnose(cluster, node, ip, pod_per_node[node.name]))


def test_same_node_full_size_packets_pass(probe, cluster, neighbours, family):
    probe.full_size(cluster, *neighbours, family)
