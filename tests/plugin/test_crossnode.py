"""Cross-node programming on real namespaces: host-gw routes, the vxlan device and its peers.

The first half calls plugin.crossnode directly inside "node" namespaces; the pod-to-pod tests
at the end run the real plugin (ADD with host-local) on two nodes and ping across.
"""
from __future__ import annotations

import ipaddress
import json
import socket
import threading
import time

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
    run_in_netns,
    sh,
    topology,
)
from pyroute2 import IPRoute

from plugin import crossnode
from plugin.cni import netconf
from plugin.crossnode import localaddr, locking, vxlan
from plugin.crossnode.errors import Misconfigured, ProgrammingFailed
from plugin.crossnode.peer_routes import PROTO_HOST_GW, PROTO_VXLAN

pytestmark = pytest.mark.root


@pytest.fixture(autouse=True)
def lock_dir(crossnode_lock_dir):
    return crossnode_lock_dir


@pytest.fixture
def lab3():
    with cluster(3) as lab:
        yield lab


@pytest.fixture
def lab2():
    with cluster(2) as lab:
        yield lab


# --- finding ourselves --------------------------------------------------------------------------

def test_find_self_prefers_node_name_then_env_then_local_ip(lab2, monkeypatch):
    raw = lab2.conf("host-gw")
    conf = netconf.parse(raw)
    # In node2's namespace, by its address:
    assert run_in_netns(lab2.node("node2").ns, crossnode.find_self, conf.topology).name == "node2"
    monkeypatch.setenv("CNILAB_NODE_NAME", "node1")
    assert run_in_netns(lab2.node("node2").ns, crossnode.find_self, conf.topology).name == "node1"
    conf = netconf.parse({**raw, "nodeName": "node2"})
    assert run_in_netns(lab2.node("node1").ns, crossnode.find_self, conf.topology).name == "node2"


def test_find_self_by_hostname_and_clear_error_when_unknown(lab2):
    raw = lab2.conf("host-gw")
    ns = lab2.new_ns("empty")
    me_by_host = {**raw, "nodes": [*raw["nodes"], {"name": socket.gethostname(),
                                                   "ip": "10.123.0.99",
                                                   "podSubnet": "10.124.99.0/24"}]}
    found = run_in_netns(ns, crossnode.find_self, topology(me_by_host))
    assert found.name == socket.gethostname()
    with pytest.raises(Misconfigured) as e:
        run_in_netns(ns, crossnode.find_self, topology(raw))
    assert e.value.field == "nodes" and "nodeName" in e.value.details
    with pytest.raises(Misconfigured) as e:
        crossnode.find_self(topology({**raw, "nodeName": "nope"}))
    assert "'nope'" in e.value.msg and "node1" in e.value.details


def test_find_self_by_hostname_only_when_no_node_has_a_local_ip(lab2):
    # node2's namespace, with a node entry named after this host whose IP is elsewhere:
    # the local IP decides (the hostname is only a shortcut when its IP is local too).
    raw = lab2.conf("host-gw")
    named_after_host = {"name": socket.gethostname(), "ip": "10.123.0.99",
                        "podSubnet": "10.124.99.0/24"}
    conf = netconf.parse({**raw, "nodes": [named_after_host, *raw["nodes"]]})
    assert run_in_netns(lab2.node("node2").ns, crossnode.find_self, conf.topology).name == "node2"
    # ...and when the host's namesake holds a local IP it wins without an address dump.
    renamed = [{**n, "name": socket.gethostname()} if n["name"] == "node1" else n
               for n in raw["nodes"]]
    conf = netconf.parse({**raw, "nodes": renamed})
    assert run_in_netns(lab2.node("node1").ns, crossnode.find_self, conf.topology).name == \
        socket.gethostname()


def test_interface_holding_finds_the_device_among_many_addresses(lab2):
    node = lab2.node("node1")
    # Ten /32s on extra veths, as pods' host sides hold their gateway addresses.
    for i in range(10):
        sh("ip", "-n", node.ns, "link", "add", f"gw{i}", "type", "veth", "peer", "name", f"pe{i}")
        sh("ip", "-n", node.ns, "addr", "add", f"10.124.1.{i + 1}/32", "dev", f"gw{i}")
    links = {link["ifname"]: link["ifindex"] for link in ip_json(node.ns, "link", "show")}

    def lookups():
        with IPRoute(strict_check=True) as ipr:
            return [localaddr.interface_holding(ipr, ipaddress.IPv4Address(a)) for a in
                    (node.ip, "10.124.1.7", "10.123.0.250", "192.0.2.1")] + \
                   [localaddr._dump_for(ipr, ipaddress.IPv4Address(node.ip))]

    eth0, gw6, on_segment_not_ours, unroutable, by_dump = run_in_netns(node.ns, lookups)
    assert eth0 == links["eth0"] == by_dump
    assert gw6 == links["gw6"]
    assert on_segment_not_ours is None and unroutable is None

    # A point-to-point address: ours is the local end, never the peer's.
    sh("ip", "-n", node.ns, "addr", "add", "10.124.1.50", "peer", "10.124.1.51", "dev", "gw0")

    def both_ways():
        with IPRoute(strict_check=True) as ipr:
            return localaddr.local_addresses(ipr), [
                localaddr.interface_holding(ipr, ipaddress.IPv4Address(a))
                for a in ("10.124.1.50", "10.124.1.51")]

    dumped, (ours, peers) = run_in_netns(node.ns, both_ways)
    assert dumped[ipaddress.IPv4Address("10.124.1.50")] == links["gw0"] == ours
    assert ipaddress.IPv4Address("10.124.1.51") not in dumped and peers is None


# --- host-gw ------------------------------------------------------------------------------------

def test_host_gw_routes_each_peer_subnet_via_its_node_ip_and_pods_reach_each_other(lab3):
    raw = lab3.conf("host-gw")
    assert program_all(lab3, raw) == {}
    n1 = lab3.node("node1")
    assert our_routes(n1.ns, PROTO_HOST_GW) == [
        ("10.124.2.0/24", "10.123.0.12", "eth0"), ("10.124.3.0/24", "10.123.0.13", "eth0")]
    a, c = add_endpoint(n1), add_endpoint(lab3.node("node3"))
    assert pings(n1.ns, a, c)


def test_host_gw_is_idempotent_and_leaves_foreign_routes_alone(lab2):
    n1 = lab2.node("node1")
    sh("ip", "-n", n1.ns, "route", "add", "10.200.0.0/16", "via", "10.123.0.12")
    raw = lab2.conf("host-gw")
    program(lab2, "node1", raw)
    first = our_routes(n1.ns, PROTO_HOST_GW)
    assert program(lab2, "node1", raw) == []
    assert our_routes(n1.ns, PROTO_HOST_GW) == first
    assert len(ip_json(n1.ns, "route", "show", "10.124.2.0/24")) == 1
    assert ip_json(n1.ns, "route", "show", "10.200.0.0/16"), "someone else's route was removed"


def test_host_gw_removes_departed_peers_and_follows_a_moved_peer(lab3):
    raw = lab3.conf("host-gw")
    program(lab3, "node1", raw)
    n1 = lab3.node("node1")
    two = lab3.conf("host-gw", nodes=lab3.nodes[:2])
    two["nodes"][1]["ip"] = "10.123.0.22"  # node2 moved
    sh("ip", "-n", n1.ns, "addr", "add", "10.123.0.22/24", "dev", "eth0")  # reachable there
    assert program(lab3, "node1", two) == []
    assert our_routes(n1.ns, PROTO_HOST_GW) == [("10.124.2.0/24", "10.123.0.22", "eth0")]


def test_host_gw_reports_missing_and_wrong_routes_for_status(lab2):
    raw = lab2.conf("host-gw")
    program(lab2, "node1", raw)
    ns = lab2.node("node1").ns
    sh("ip", "-n", ns, "route", "del", "10.124.2.0/24", "proto", str(PROTO_HOST_GW))
    assert problems(lab2, "node1", raw) == [
        "route to node2's pods missing: want 10.124.2.0/24 via 10.123.0.12"]
    sh("ip", "-n", ns, "route", "add", "10.124.2.0/24", "via", "10.123.0.1",
       "proto", str(PROTO_HOST_GW))
    assert problems(lab2, "node1", raw) == [
        "route to node2's pods is 10.124.2.0/24 via 10.123.0.1, "
        "want 10.124.2.0/24 via 10.123.0.12"]


def test_host_gw_needs_one_segment_and_says_so(lab2):
    raw = lab2.conf("host-gw")
    raw["nodes"][1]["ip"] = "10.77.0.12"  # not on node1's segment
    with pytest.raises(ProgrammingFailed) as e:
        program(lab2, "node1", raw)
    assert "vxlan" in e.value.details
    assert our_routes(lab2.node("node1").ns, PROTO_HOST_GW) == []


# --- vxlan --------------------------------------------------------------------------------------

def vx_state(lab, node, raw):
    dev = raw["vxlan"]["device"]
    link = ip_json(node.ns, "-d", "link", "show", dev)[0]
    entries = json.loads(sh("bridge", "-j", "-n", node.ns, "fdb", "show", "dev", dev).stdout)
    fdb = sorted((e["mac"], e.get("dst")) for e in entries if e.get("dst"))
    neigh = sorted((n["dst"], n.get("lladdr"), tuple(n.get("state", [])))
                   for n in ip_json(node.ns, "neigh", "show", "dev", dev))
    return link, fdb, neigh, our_routes(node.ns, PROTO_VXLAN)


def test_vxlan_device_peers_and_traffic(lab3):
    raw = lab3.conf("vxlan", mtu=1500)
    assert program_all(lab3, raw) == {}
    n1 = lab3.node("node1")
    link, fdb, neigh, routes = vx_state(lab3, n1, raw)
    info = link["linkinfo"]["info_data"]
    assert (info["id"], info["port"], info["local"], info["learning"]) == (
        4343, 4799, "10.123.0.11", False)
    assert link["mtu"] == 1450 and link["address"] == "0e:cb:0a:7b:00:0b"
    addrs = ip_json(n1.ns, "-4", "addr", "show", "dev", raw["vxlan"]["device"])[0]["addr_info"]
    assert [(a["local"], a["prefixlen"]) for a in addrs] == [("10.124.1.0", 32)]
    assert fdb == [("0e:cb:0a:7b:00:0c", "10.123.0.12"), ("0e:cb:0a:7b:00:0d", "10.123.0.13")]
    assert neigh == [("10.124.2.0", "0e:cb:0a:7b:00:0c", ("PERMANENT",)),
                     ("10.124.3.0", "0e:cb:0a:7b:00:0d", ("PERMANENT",))]
    dev = raw["vxlan"]["device"]
    assert routes == [("10.124.2.0/24", "10.124.2.0", dev), ("10.124.3.0/24", "10.124.3.0", dev)]
    a, b = add_endpoint(n1), add_endpoint(lab3.node("node2"))
    assert pings(n1.ns, a, b)
    # and it really went through the tunnel: node2's device counted the packets
    stats = ip_json(lab3.node("node2").ns, "-s", "link", "show", dev)[0]["stats64"]
    assert stats["rx"]["packets"] >= 1


def test_vxlan_device_follows_the_underlay_mtu(lab2):
    raw = lab2.conf("vxlan")
    n1 = lab2.node("node1")
    sh("ip", "-n", n1.ns, "link", "set", "eth0", "mtu", "9000")
    assert program(lab2, "node1", raw) == []
    assert vx_state(lab2, n1, raw)[0]["mtu"] == 8950
    sh("ip", "-n", n1.ns, "link", "set", "eth0", "mtu", "1400")
    assert program(lab2, "node1", raw) == []
    assert vx_state(lab2, n1, raw)[0]["mtu"] == 1350


def test_vxlan_keeps_clear_of_flannel_and_derives_macs_from_node_ips():
    import ipaddress
    assert vxlan.vtep_mac(ipaddress.IPv4Address("192.168.1.2")) == "0e:cb:c0:a8:01:02"
    assert netconf.parse({"cniVersion": "1.1.0", "name": "n", "type": "cnilab",
                          "ipam": {"type": "host-local"}, "backend": "vxlan",
                          "nodes": [{"name": "a", "ip": "10.0.0.1",
                                     "podSubnet": "10.1.0.0/24"}]}).vxlan.device_name != "flannel.1"


def test_vxlan_is_idempotent_removes_departed_peers_and_rebuilds_a_changed_device(lab3):
    raw = lab3.conf("vxlan")
    n1 = lab3.node("node1")
    program(lab3, "node1", raw)
    before = vx_state(lab3, n1, raw)
    assert program(lab3, "node1", raw) == []
    after = vx_state(lab3, n1, raw)
    assert before[1:] == after[1:] and before[0]["ifindex"] == after[0]["ifindex"]

    two = lab3.conf("vxlan", nodes=lab3.nodes[:2])
    assert program(lab3, "node1", two) == []
    _, fdb, neigh, routes = vx_state(lab3, n1, two)
    assert [m for m, _ in fdb] == ["0e:cb:0a:7b:00:0c"]
    assert [n[0] for n in neigh] == ["10.124.2.0"] and [r[0] for r in routes] == ["10.124.2.0/24"]

    two["vxlan"]["vni"] = 4344  # a changed VNI cannot be set live: the device is rebuilt
    assert program(lab3, "node1", two) == []
    link, fdb, _, routes = vx_state(lab3, n1, two)
    assert link["linkinfo"]["info_data"]["id"] == 4344 and len(fdb) == 1 and len(routes) == 1


def test_vxlan_reports_what_status_should_see(lab2):
    raw = lab2.conf("vxlan")
    program(lab2, "node1", raw)
    ns, dev = lab2.node("node1").ns, raw["vxlan"]["device"]
    sh("ip", "-n", ns, "neigh", "del", "10.124.2.0", "dev", dev)
    sh("bridge", "-n", ns, "fdb", "replace", "0e:cb:0a:7b:00:0c", "dev", dev, "dst", "10.123.0.99")
    found = problems(lab2, "node1", raw)
    assert found == ["FDB entry for node2 is 0e:cb:0a:7b:00:0c dst 10.123.0.99, "
                     "want dst 10.123.0.12",
                     "neighbour entry for node2 is missing, want 10.124.2.0 lladdr "
                     "0e:cb:0a:7b:00:0c"]
    sh("ip", "-n", ns, "link", "del", dev)
    assert problems(lab2, "node1", raw) == [f"vxlan device {dev} is missing"]


def test_vxlan_refuses_to_take_over_a_foreign_device(lab2):
    raw = lab2.conf("vxlan")
    ns, dev = lab2.node("node1").ns, raw["vxlan"]["device"]
    sh("ip", "-n", ns, "link", "add", dev, "type", "bridge")
    with pytest.raises(ProgrammingFailed) as e:
        program(lab2, "node1", raw)
    assert "not ours" in e.value.msg
    assert ip_json(ns, "-d", "link", "show", dev)[0]["linkinfo"]["info_kind"] == "bridge"


@pytest.mark.parametrize("backend", ["host-gw", "vxlan"])
def test_parallel_programming_on_a_fresh_node_succeeds_once(lab3, backend):
    raw = lab3.conf(backend)
    errors: list = []
    barrier = threading.Barrier(8)

    def one():
        try:
            barrier.wait()
            assert program(lab3, "node1", raw) == []
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    proto = PROTO_HOST_GW if backend == "host-gw" else PROTO_VXLAN
    assert len(our_routes(lab3.node("node1").ns, proto)) == 2


def test_two_labs_from_one_config_never_share_a_nodes_lock(lab2):
    """Same network name, same node name, two network namespaces: two locks (a second lab
    made from the same example must not wait on the first one's ADDs)."""
    topo = topology(lab2.conf("host-gw"))
    node1 = next(n for n in topo.nodes if n.name == "node1")
    here = crossnode.lock_name(topo, node1)
    there = run_in_netns(lab2.node("node1").ns, crossnode.lock_name, topo, node1)
    other = run_in_netns(lab2.node("node2").ns, crossnode.lock_name, topo, node1)
    assert len({here, there, other}) == 3
    assert there == run_in_netns(lab2.node("node1").ns, crossnode.lock_name, topo, node1)
    assert there.startswith(f"crossnode-{topo.network}-node1-")


@pytest.mark.parametrize("backend", ["host-gw", "vxlan"])
def test_a_programmed_node_takes_no_lock_and_a_change_waits_for_it(lab2, backend, lock_dir):
    raw = lab2.conf(backend)
    node = lab2.node("node1")
    assert program(lab2, "node1", raw) == []
    proto = PROTO_HOST_GW if backend == "host-gw" else PROTO_VXLAN
    topo = topology(raw)
    node1 = next(n for n in topo.nodes if n.name == "node1")
    # another call programming this node (the lock is named in the node's namespace):
    with locking.exclusive(lock_dir, run_in_netns(node.ns, crossnode.lock_name, topo, node1)):
        started = time.monotonic()
        assert program(lab2, "node1", raw) == []
        assert time.monotonic() - started < 5, "an ADD with nothing to change waited"
        sh("ip", "-n", node.ns, "route", "del", "10.124.2.0/24", "proto", str(proto))
        finished: list = []
        repair = threading.Thread(target=lambda: finished.append(program(lab2, "node1", raw)))
        repair.start()
        repair.join(0.5)
        assert not finished, "a change was made without the node's lock"
    repair.join(30)
    assert finished == [[]]
    assert [r[0] for r in our_routes(node.ns, proto)] == ["10.124.2.0/24"]


# --- pods on two nodes, the real plugin -----------------------------------------------------------

V4, V6, DUAL = (4,), (6,), (4, 6)


@pytest.mark.parametrize("backend,underlay,pods", [
    ("host-gw", V4, V4), ("vxlan", V4, V4), ("host-gw", DUAL, DUAL), ("host-gw", V6, V6),
    ("vxlan", V4, DUAL), ("vxlan", V6, DUAL), ("vxlan", V6, V6)],
    ids=["host-gw v4", "vxlan v4", "host-gw dual", "host-gw v6", "vxlan dual over v4",
         "vxlan dual over v6", "vxlan v6 over v6"])
def test_pods_on_different_nodes_reach_each_other(backend, underlay, pods, tmp_path):
    """ADD a pod on each node with the plugin itself (host-local IPAM), ping across in each
    family, CHECK and STATUS; break a route: STATUS and CHECK name it; DEL leaves nothing."""
    from cnitest import leases, links, run_plugin

    env = {"CNILAB_RUN_DIR": str(tmp_path / "run")}
    with cluster(2, underlay=underlay, pods=pods) as lab:
        pod_ns = {"node1": lab.new_ns("pod1"), "node2": lab.new_ns("pod2")}
        routes = [{"dst": "10.124.0.0/16"}, {"dst": "fd00:124::/48"}]

        def conf_for(node_name):
            # One cluster-wide config; only host-local's dataDir is per node, as on real nodes.
            return lab.conf(backend, ipam={
                "type": "host-local", "dataDir": str(tmp_path / f"ipam-{node_name}"),
                "routes": [r for r in routes if (6 if ":" in r["dst"] else 4) in pods]})

        results = {}
        try:
            for name, pod in pod_ns.items():
                added = run_plugin(lab.node(name).ns, "ADD", conf_for(name), netns=pod,
                                   container_id=f"c-{name}", extra_env=env)
                assert added.returncode == 0, added
                results[name] = added.json
                mtu = 1500 - (0 if backend == "host-gw" else 50 if 4 in underlay else 70)
                assert added.json["interfaces"][1]["mtu"] == mtu
            for family in pods:
                ip = {}
                for name, res in results.items():
                    (address,) = [i["address"] for i in res["ips"]
                                  if ipaddress.ip_interface(i["address"]).version == family]
                    subnet = ipaddress.ip_network(lab.node(name).pod_subnet_of(family))
                    assert ipaddress.ip_interface(address).ip in subnet  # this node's subnet
                    ip[name] = address.split("/")[0]
                for src, dst in (("node1", "node2"), ("node2", "node1")):
                    ping = sh("ip", "netns", "exec", pod_ns[src], "ping", f"-{family}", "-c1",
                              "-W2", ip[dst], check=False)
                    assert ping.returncode == 0, (family, src, dst, ping.stdout)
            n1 = lab.node("node1").ns
            checked = dict(conf_for("node1"), prevResult=results["node1"])
            for command, conf in (("CHECK", checked), ("STATUS", conf_for("node1"))):
                done = run_plugin(n1, command, conf, netns=pod_ns["node1"],
                                  container_id="c-node1", extra_env=env)
                assert done.returncode == 0, done
            # node1's way to node2's pods (IPv6 ones, if any) breaks: STATUS and CHECK say so
            proto = PROTO_HOST_GW if backend == "host-gw" else PROTO_VXLAN
            lost = "fd00:124:0:2::/64" if 6 in pods else "10.124.2.0/24"
            sh("ip", "-n", n1, "-6" if 6 in pods else "-4", "route", "del", lost,
               "proto", str(proto))
            status = run_plugin(n1, "STATUS", conf_for("node1"), extra_env=env)
            assert status.returncode == 1 and status.json["code"] == 51, status
            assert lost in status.json["msg"] and "node2" in status.json["msg"]
            check = run_plugin(n1, "CHECK", checked, netns=pod_ns["node1"],
                               container_id="c-node1", extra_env=env)
            assert check.json["code"] == 103 and lost in check.json["details"], check
        finally:
            for name, pod in pod_ns.items():
                gone = run_plugin(lab.node(name).ns, "DEL", conf_for(name), netns=pod,
                                  container_id=f"c-{name}", extra_env=env)
                assert gone.returncode == 0, gone
                assert links(pod) == ["lo"]
                assert leases(tmp_path / f"ipam-{name}", lab.conf(backend)["name"]) == []
