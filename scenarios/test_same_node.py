"""Pods on one node reach each other, and the node reaches its pods, in every family the lab
runs (`[v4]`, `[v6]` in the test id)."""
from __future__ import annotations

from .support import address, diagnose, diagnose_mtu, expect


def test_same_node_pod_to_pod_icmp_both_directions(probe, cluster, neighbours, family):
    a, b = neighbours
    for src, dst in ((a, b), (b, a)):
        ip = address(dst, family)
        expect(probe.ping(src, ip).ok, probe.unreachable(
            cluster, src, ip, f"{src.name} -> {dst.name} ({ip}) on {src.node}: no ICMP reply",
            dst))


def test_same_node_pod_to_pod_tcp_both_directions(probe, cluster, neighbours, family):
    a, b = neighbours
    for src, dst in ((a, b), (b, a)):
        if probe.tcp_echo(src, dst, family=family) != f"pong from-{src.name}":
            expect(False, probe.unreachable(cluster, src, address(dst, family),
                                            f"TCP {src.name} -> {dst.name} on {src.node} failed",
                                            dst))


def test_same_node_node_reaches_its_pods(probe, cluster, pod_per_node, family):
    for node in cluster.nodes():
        ip = address(pod_per_node[node.name], family)
        if not probe.node_ping(node, ip).succeeded:
            expect(False, f"{node.name} -> its pod {ip}: no reply\n"
                          + diagnose(cluster, node, ip, pod_per_node[node.name]))


def test_same_node_full_size_packets_pass(probe, cluster, neighbours, family):
    a, b = neighbours
    mtu, ip = cluster.mtu or 1500, address(b, family)
    expect(probe.ping(a, ip).ok, probe.unreachable(
        cluster, a, ip, f"{a.name} -> {b.name}: no reply even to small packets, so this is "
                        "not about the MTU", b))
    if not probe.ping(a, ip, mtu=mtu).ok:
        expect(False, f"a {mtu}-byte DF packet {a.name} -> {b.name} ({ip}) was lost\n"
                      + diagnose_mtu(cluster, a, ip, mtu))
