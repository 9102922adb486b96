"""Cross-node programming for IPv6 and dual-stack pod subnets, over IPv4, IPv6 and dual-stack
underlays (namespaces on one bridge: crossnode_lab). The real plugin on two nodes, in every
family: test_crossnode.py.
"""
from __future__ import annotations

import ipaddress
import json

import pytest
from crossnode_lab import (
    add_endpoint,
    cluster,
    ip_json,
    our_routes,
    pings,
    problems,
    program,
    program_all,
    sh,
)

from plugin.crossnode.peer_routes import PROTO_HOST_GW, PROTO_VXLAN
from plugin.crossnode.topology import vtep_mac

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("crossnode_lock_dir")]
DUAL = (4, 6)


def vxlan_programmed(lab):
    """Every node programmed for vxlan: the config, node1's device name, its settings and
    its state."""
    raw = lab.conf("vxlan", mtu=1500)
    assert program_all(lab, raw) == {}
    dev = raw["vxlan"]["device"]
    state = vx_state(lab.node("node1"), dev)
    return (raw, dev, state[0]["linkinfo"]["info_data"], *state)


def vx_state(node, dev):
    link = ip_json(node.ns, "-d", "link", "show", dev)[0]
    entries = json.loads(sh("bridge", "-j", "-n", node.ns, "fdb", "show", "dev", dev).stdout)
    fdb = sorted((e["mac"], e.get("dst")) for e in entries if e.get("dst"))
    neigh = sorted((n["dst"], n.get("lladdr")) for n in ip_json(node.ns, "neigh", "show",
                                                                 "dev", dev)
                   if "PERMANENT" in n.get("state", []))
    addrs = sorted((a["local"], a["prefixlen"]) for a in
                   ip_json(node.ns, "addr", "show", "dev", dev)[0]["addr_info"]
                   if not a["local"].startswith("fe80:"))
    return link, fdb, neigh, addrs, our_routes(node.ns, PROTO_VXLAN)


# --- host-gw -------------------------------------------------------------------------------------

def test_host_gw_routes_each_family_via_the_peers_address_of_that_family():
    with cluster(3, underlay=DUAL, pods=DUAL) as lab:
        raw = lab.conf("host-gw")
        assert raw["nodes"][1]["ips"] == ["10.123.0.12", "fd00:123::12"]
        assert program_all(lab, raw) == {}
        n1, n3 = lab.node("node1"), lab.node("node3")
        assert our_routes(n1.ns, PROTO_HOST_GW) == [
            ("10.124.2.0/24", "10.123.0.12", "eth0"), ("10.124.3.0/24", "10.123.0.13", "eth0"),
            ("fd00:124:0:2::/64", "fd00:123::12", "eth0"),
            ("fd00:124:0:3::/64", "fd00:123::13", "eth0")]
        for family in DUAL:
            a, c = add_endpoint(n1, family=family), add_endpoint(n3, family=family)
            assert pings(n1.ns, a, c), family


def test_host_gw_on_an_ipv6_only_cluster_and_status_sees_a_missing_route():
    with cluster(2, underlay=(6,), pods=(6,)) as lab:
        raw = lab.conf("host-gw")
        assert raw["nodes"][0] == {"name": "node1", "ip": "fd00:123::11",
                                   "podSubnet": "fd00:124:0:1::/64"}
        assert program_all(lab, raw) == {}
        n1, n2 = lab.node("node1"), lab.node("node2")
        assert our_routes(n1.ns, PROTO_HOST_GW) == [("fd00:124:0:2::/64", "fd00:123::12", "eth0")]
        a, b = add_endpoint(n1, family=6), add_endpoint(n2, family=6)
        assert pings(n1.ns, a, b)
        sh("ip", "-n", n1.ns, "-6", "route", "del", "fd00:124:0:2::/64", "proto",
           str(PROTO_HOST_GW))
        assert problems(lab, "node1", raw) == [
            "route to node2's pods missing: want fd00:124:0:2::/64 via fd00:123::12"]


def test_host_gw_drops_the_routes_of_a_family_the_config_no_longer_has():
    with cluster(2, underlay=DUAL, pods=DUAL) as lab:
        program(lab, "node1", lab.conf("host-gw"))
        n1 = lab.node("node1")
        assert len(our_routes(n1.ns, PROTO_HOST_GW)) == 2
        v4_only = lab.conf("host-gw")
        for entry in v4_only["nodes"]:
            entry["podSubnets"] = [entry["podSubnet"]]
        assert program(lab, "node1", v4_only) == []
        assert our_routes(n1.ns, PROTO_HOST_GW) == [("10.124.2.0/24", "10.123.0.12", "eth0")]


# --- vxlan ---------------------------------------------------------------------------------------

def test_vxlan_carries_both_pod_families_over_an_ipv4_underlay():
    with cluster(3, underlay=(4,), pods=DUAL) as lab:
        raw, dev, info, link, fdb, neigh, addrs, routes = vxlan_programmed(lab)
        n1, n2 = lab.node("node1"), lab.node("node2")
        assert info["local"] == "10.123.0.11" and "local6" not in info
        assert link["mtu"] == 1450 and link["address"] == "0e:cb:0a:7b:00:0b"
        assert addrs == [("10.124.1.0", 32), ("fd00:124:0:1::", 128)]
        assert fdb == [("0e:cb:0a:7b:00:0c", "10.123.0.12"), ("0e:cb:0a:7b:00:0d", "10.123.0.13")]
        assert neigh == [("10.124.2.0", "0e:cb:0a:7b:00:0c"), ("10.124.3.0", "0e:cb:0a:7b:00:0d"),
                         ("fd00:124:0:2::", "0e:cb:0a:7b:00:0c"),
                         ("fd00:124:0:3::", "0e:cb:0a:7b:00:0d")]
        assert routes == [("10.124.2.0/24", "10.124.2.0", dev),
                          ("10.124.3.0/24", "10.124.3.0", dev),
                          ("fd00:124:0:2::/64", "fd00:124:0:2::", dev),
                          ("fd00:124:0:3::/64", "fd00:124:0:3::", dev)]
        vtep6 = ip_json(n1.ns, "-6", "addr", "show", "dev", dev)[0]["addr_info"]
        assert all(not a.get("tentative") for a in vtep6 if a["local"].startswith("fd00:"))
        a, b = add_endpoint(n1, family=6), add_endpoint(n2, family=6)
        assert pings(n1.ns, a, b)
        stats = ip_json(n2.ns, "-s", "link", "show", dev)[0]["stats64"]
        assert stats["rx"]["packets"] >= 1  # through the tunnel, not around it
        assert problems(lab, "node3", raw) == []


@pytest.mark.parametrize("pods", [(6,), DUAL], ids=["v6 pods", "dual-stack pods"])
def test_vxlan_over_an_ipv6_underlay(pods):
    with cluster(2, underlay=(6,), pods=pods) as lab:
        raw, dev, info, link, fdb, neigh, addrs, routes = vxlan_programmed(lab)
        n1, n2 = lab.node("node1"), lab.node("node2")
        assert info["local6"] == "fd00:123::11" and "local" not in info
        assert link["mtu"] == 1430  # an IPv6 outer header: 20 bytes more than IPv4's
        mac2 = vtep_mac(ipaddress.ip_address("fd00:123::12"))
        assert link["address"] != mac2 and fdb == [(mac2, "fd00:123::12")]
        assert ("fd00:124:0:2::", mac2) in neigh and ("fd00:124:0:1::", 128) in addrs
        assert ("fd00:124:0:2::/64", "fd00:124:0:2::", dev) in routes
        assert (("10.124.2.0/24", "10.124.2.0", dev) in routes) == (4 in pods)
        for family in pods:
            a, b = add_endpoint(n1, family=family), add_endpoint(n2, family=family)
            assert pings(n1.ns, a, b), family
        assert problems(lab, "node1", raw) == []


def test_vxlan_reports_missing_ipv6_entries_for_status():
    with cluster(2, underlay=(4,), pods=DUAL) as lab:
        raw = lab.conf("vxlan")
        dev = raw["vxlan"]["device"]
        program(lab, "node1", raw)
        ns = lab.node("node1").ns
        sh("ip", "-n", ns, "-6", "neigh", "del", "fd00:124:0:2::", "dev", dev)
        sh("ip", "-n", ns, "-6", "route", "del", "fd00:124:0:2::/64", "dev", dev)
        sh("ip", "-n", ns, "-6", "addr", "del", "fd00:124:0:1::/128", "dev", dev)
        assert problems(lab, "node1", raw) == [
            f"{dev} lacks its VTEP address fd00:124:0:1::/128",
            "neighbour entry for node2 is missing, want fd00:124:0:2:: lladdr 0e:cb:0a:7b:00:0c",
            "route to node2's pods missing: want fd00:124:0:2::/64 via fd00:124:0:2:: onlink"]
        assert program(lab, "node1", raw) == []  # and the next ADD puts them back


def test_vxlan_follows_the_nodes_to_an_ipv6_underlay():
    """The same nodes, their IPv4 addresses gone from the config: the device is rebuilt to
    tunnel over IPv6, and no IPv4 FDB entry is left."""
    with cluster(2, underlay=DUAL, pods=DUAL) as lab:
        raw = lab.conf("vxlan")
        dev = raw["vxlan"]["device"]
        program(lab, "node1", raw)
        n1 = lab.node("node1")
        assert vx_state(n1, dev)[1] == [("0e:cb:0a:7b:00:0c", "10.123.0.12")]
        for entry in raw["nodes"]:
            entry["ips"] = [ip for ip in entry["ips"] if ":" in ip]
            entry["ip"] = entry["ips"][0]
        assert program(lab, "node1", raw) == []
        link, fdb, _, _, routes = vx_state(n1, dev)
        assert link["linkinfo"]["info_data"]["local6"] == "fd00:123::11"
        assert [dst for _, dst in fdb] == ["fd00:123::12"] and len(routes) == 2
