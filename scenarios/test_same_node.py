"""Pods on one node reach each other, and the node reaches its pods."""
from __future__ import annotations


def test_same_node_pod_to_pod_icmp_both_directions(probe, neighbours):
    a, b = neighbours
    assert probe.ping(a, b.ip).ok, f"{a.name} -> {b.name} ({b.ip}) on {a.node}: no ICMP reply"
    assert probe.ping(b, a.ip).ok, f"{b.name} -> {a.name} ({a.ip}) on {a.node}: no ICMP reply"


def test_same_node_pod_to_pod_tcp_both_directions(probe, neighbours):
    a, b = neighbours
    assert probe.tcp_echo(a, b) == f"pong from-{a.name}", f"TCP {a.name} -> {b.name} failed"
    assert probe.tcp_echo(b, a) == f"pong from-{b.name}", f"TCP {b.name} -> {a.name} failed"


def test_same_node_node_reaches_its_pods(probe, cluster, pod_per_node):
    for node in cluster.nodes():
        pod = pod_per_node[node.name]
        assert probe.node_ping(node, pod.ip).succeeded, f"{node.name} -> its pod {pod.ip}"


def test_same_node_full_size_packets_pass(probe, cluster, neighbours):
    a, b = neighbours
    mtu = cluster.mtu or 1500
    assert probe.ping(a, b.ip, size=mtu - 28).ok, f"{mtu}-byte packet {a.name} -> {b.name}"
