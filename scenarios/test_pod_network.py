"""A pod attached to the network under test gets its interface, its address and its MTU."""
from __future__ import annotations

import ipaddress

import pytest

from .support import address, interface_mtu


def test_every_pod_gets_the_interface_and_an_ip_from_its_nodes_subnet(cluster, pod_per_node,
                                                                      family):
    for node, pod in pod_per_node.items():
        ip = address(pod, family)
        subnet = ipaddress.ip_network(cluster.pod_subnet(node, family))
        assert ipaddress.ip_address(ip) in subnet, f"{pod.name} on {node}: {ip} ∉ {subnet}"
        addr = pod.exec(["ip", "-o", f"-{family}", "addr", "show", "dev", pod.ifname])
        assert addr.ok, f"{pod.name} on {node} has no {pod.ifname}: {addr.stderr}"
        assert f" {ip}/" in addr.stdout, f"{pod.ifname} of {pod.name} lacks {ip}"


def test_pod_ips_are_unique_across_the_cluster(pod_per_node, neighbours, family):
    ips = [address(p, family) for p in [*pod_per_node.values(), *neighbours]]
    assert len(set(ips)) == len(ips), f"duplicate pod IPs: {ips}"


def test_pod_mtu_is_the_configured_one(cluster, pod_per_node):
    if cluster.mtu is None:
        pytest.skip("the network config sets no MTU")
    for node, pod in pod_per_node.items():
        assert interface_mtu(pod) == cluster.mtu, (
            f"{pod.ifname} of {pod.name} on {node}: MTU {interface_mtu(pod)}, "
            f"config asks for {cluster.mtu}")
