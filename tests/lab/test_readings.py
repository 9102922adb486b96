"""lab.drivers.readings: network configs, host-local's files and `ip` output, read as text."""
from __future__ import annotations

import pytest

from lab.api import LabError
from lab.drivers.readings import (
    ipam_dir_of,
    parse_leases,
    plugin_under_test,
    pod_subnet_of,
    pod_veths,
)


def test_the_underlay_veth_of_a_netns_node_is_not_a_pod_veth():
    links = ("3: eth0@if4: <BROADCAST,UP> mtu 1500 state UP\n"
             "6: veth1a2b3c4d@if2: <BROADCAST,UP> mtu 1500 state UP\n"
             "garbage\n")
    addrs = ("1: lo    inet 127.0.0.1/8 scope host lo\n"
             "3: eth0    inet 10.99.0.11/24 brd 10.99.0.255 scope global eth0\n")
    assert pod_veths(links, addrs, "10.99.0.11") == ["veth1a2b3c4d"]
    assert pod_veths(links, addrs, "10.99.0.12") == ["eth0", "veth1a2b3c4d"]


def test_leases_skip_host_locals_bookkeeping_files():
    listing = ("10.244.0.2\tabc123 eth0\nlock\t\nlast_reserved_ip.0\t10.244.0.2\n"
               "fd00:244::2\tdef456\n")
    assert parse_leases(listing) == {"10.244.0.2": "abc123", "fd00:244::2": "def456"}


def test_a_nodes_pod_subnet_comes_from_the_most_specific_place():
    ours = {"nodes": [{"name": "node1", "podSubnets": ["10.244.0.0/24", "fd00:244::/64"]}]}
    assert pod_subnet_of(ours, "node1", 6, {}) == "fd00:244::/64"
    ranges = {"ipam": {"ranges": [[{"subnet": "10.1.0.0/24"}]]}}
    assert pod_subnet_of(ranges, "node1", 4, {4: "10.244.0.0/24"}) == "10.1.0.0/24"
    assert pod_subnet_of({}, "node1", 4, {4: "10.244.0.0/24"}) == "10.244.0.0/24"
    with pytest.raises(LabError, match="cannot tell the IPv6 pod subnet of node1"):
        pod_subnet_of(ranges, "node1", 6, {})


def test_the_plugin_under_test_is_a_conflists_first_plugin():
    conflist = {"name": "n", "plugins": [{"type": "cnilab", "ipam": {"dataDir": "/x/"}},
                                         {"type": "tuning"}]}
    assert plugin_under_test(conflist)["type"] == "cnilab"
    assert ipam_dir_of(plugin_under_test(conflist), "n") == "/x/n"
    assert ipam_dir_of({}, "n") == "/var/lib/cni/networks/n"
