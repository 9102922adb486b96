"""Pods on one node reach each other, and the node reaches its pods, in every family the lab
runs (`[v4]`, `[v6]` in the test id)."""
from __future__ import annotations

from .support import address


def test_same_node_pod_to_pod_icmp_both_directions(probe, cluster, neighbours, family):
    a, b = neighbours
    for src, dst in ((a, b), (b, a)):
        ip = address(dst, family)
        assert probe.ping(src, ip).ok, probe.unreachable(
            cluster, src, ip, f"{src.name} -> {dst.name} ({ip}) on {src.node}: no ICMP reply")


def test_same_node_pod_to_pod_tcp_both_directions(probe, cluster, neighbours, family):
    a, b = neighbours
    for src, dst in ((a, b), (b, a)):
        assert probe.tcp_echo(src, dst, family=family) == f"pong from-{src.name}", \
            probe.unreachable(cluster, src, address(dst, family),
                              f"TCP {src.name} -> {dst.name} on {src.node} failed")


def test_same_node_node_reaches_its_pods(probe, cluster, pod_per_node, family):
    for node in cluster.nodes():
        ip = address(pod_per_node[node.name], family)
        assert probe.node_ping(node, ip).succeeded, f"{node.name} -> its pod {ip}: no reply"


def test_same_node_full_size_packets_pass(probe, cluster, neighbours, family):
    a, b = neighbours
    mtu, ip = cluster.mtu or 1500, address(b, family)
    assert probe.ping(a, ip).ok, probe.unreachable(
        cluster, a, ip, f"{a.name} -> {b.name}: no reply even to small packets, so this is "
                        "not about the MTU")
    assert probe.ping(a, ip, mtu=mtu).ok, f"{mtu}-byte packet {a.name} -> {b.name} ({ip})"
