"""A failing ADD takes back everything it did: no interface, no route, no lease remains."""
from __future__ import annotations

import subprocess

import pytest
from cnitest import host_local_conf, leases, links, ns_run, routes, run_plugin

from plugin.cni.wiring import host_veth_name

pytestmark = pytest.mark.root


def assert_nothing_left(node_ns: str, pod_ns: str, ipam_dir, node_links=("lo",)) -> None:
    assert links(pod_ns) == ["lo"]
    assert links(node_ns) == sorted(node_links)
    assert routes(pod_ns) == []
    assert not any("10.250.20." in r for r in routes(node_ns))
    assert leases(ipam_dir, "cnp1net") == []


@pytest.mark.parametrize("step", ["ipam", "pod", "host", "crossnode"])
def test_failure_after_each_step_is_rolled_back(step, node_ns, pod_ns, ipam_dir):
    conf = host_local_conf(ipam_dir, "10.250.20.0/24")
    add = run_plugin(node_ns, "ADD", conf, netns=pod_ns,
                     extra_env={"CNILAB_TEST_FAIL_AFTER": step})
    assert add.returncode == 1 and add.json["code"] == 199, add
    assert "rolling back" in add.stderr
    assert_nothing_left(node_ns, pod_ns, ipam_dir)
    # and the same attachment can then be added for real
    again = run_plugin(node_ns, "ADD", conf, netns=pod_ns)
    assert again.returncode == 0, again


def test_host_veth_name_collision_releases_the_lease(node_ns, pod_ns, ipam_dir):
    """A foreign interface holding our host veth name: ADD fails after IPAM, undoes IPAM,
    and leaves the foreign interface alone."""
    taken = host_veth_name("cnp1net", "ctr1", "eth0")
    subprocess.run(["ip", "-n", node_ns, "link", "add", taken, "type", "veth", "peer", "name",
                    "cnp1peer"], check=True)
    conf = host_local_conf(ipam_dir, "10.250.20.0/24")
    add = run_plugin(node_ns, "ADD", conf, netns=pod_ns)
    assert add.returncode == 1 and add.json["code"] == 101, add
    assert taken in add.json["msg"]
    assert_nothing_left(node_ns, pod_ns, ipam_dir, node_links=("lo", taken, "cnp1peer"))
    # DEL must not delete an interface that is not ours (no matching alias)
    assert run_plugin(node_ns, "DEL", conf, netns=pod_ns).returncode == 0
    assert taken in links(node_ns)


def test_route_conflict_in_the_pod_rolls_back(node_ns, pod_ns, ipam_dir):
    """Netlink itself refuses a step (a default route already in the pod): code 102, clean."""
    ns_run(pod_ns, "ip", "link", "add", "x0", "type", "veth", "peer", "name", "x1", check=True)
    ns_run(pod_ns, "ip", "link", "set", "x0", "up", check=True)
    ns_run(pod_ns, "ip", "route", "add", "default", "dev", "x0", check=True)
    conf = host_local_conf(ipam_dir, "10.250.20.0/24")
    add = run_plugin(node_ns, "ADD", conf, netns=pod_ns)
    assert add.returncode == 1 and add.json["code"] == 102, add
    assert "configuring eth0 in the pod" in add.json["msg"]
    assert links(pod_ns) == ["lo", "x0", "x1"]
    assert links(node_ns) == ["lo"]
    assert leases(ipam_dir, "cnp1net") == []


def _cluster_eth0(pod_ns, peer_ns, route_dst):
    """The pod's eth0 as a cluster network leaves it: 10.42.0.7/24 and a route to route_dst
    via 10.42.0.1, before a secondary network's ADD."""
    ns_run(pod_ns, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "p0",
           "netns", peer_ns, check=True)
    ns_run(pod_ns, "ip", "addr", "add", "10.42.0.7/24", "dev", "eth0", check=True)
    ns_run(pod_ns, "ip", "link", "set", "eth0", "up", check=True)
    ns_run(pod_ns, "ip", "route", "add", route_dst, "via", "10.42.0.1", "dev", "eth0",
           check=True)


def test_a_secondary_network_routing_default_over_net1_names_the_collision(
        node_ns, pod_ns, make_netns, ipam_dir):
    """What Multus does: eth0 (the cluster network) holds the pod's default route, then a
    secondary network's ADD for net1 whose IPAM routes include 0.0.0.0/0."""
    _cluster_eth0(pod_ns, make_netns("prim"), "default")
    before = routes(pod_ns)
    conf = host_local_conf(ipam_dir, "10.250.20.0/24")
    add = run_plugin(node_ns, "ADD", conf, netns=pod_ns, ifname="net1")
    assert add.returncode == 1 and add.json["code"] == 102, add
    msg, details = add.json["msg"], add.json["details"]
    assert "configuring net1 in the pod: route 0.0.0.0/0 via 10.250.20.1 dev net1" in msg, msg
    assert "already has a route to 0.0.0.0/0 (0.0.0.0/0 via 10.42.0.1 dev eth0)" in msg, msg
    assert "eth0's default route" in msg and "secondary network" in msg, msg
    assert 'ipam.routes to [{"dst": "10.250.20.0/24"}] instead of 0.0.0.0/0' in details, details
    assert "(17," not in msg and "Traceback" not in add.stdout + add.stderr
    # ...and nothing of ours is left: the pod is as it was, the lease released
    assert links(pod_ns) == ["eth0", "lo"] and routes(pod_ns) == before
    assert links(node_ns) == ["lo"] and leases(ipam_dir, "cnp1net") == []
    # the fix the hint names works
    fixed = dict(conf, ipam=dict(conf["ipam"], routes=[{"dst": "10.250.20.0/24"}]))
    ok = run_plugin(node_ns, "ADD", fixed, netns=pod_ns, ifname="net1")
    assert ok.returncode == 0, ok
    assert "default via 10.42.0.1 dev eth0" in " ".join(routes(pod_ns))


def test_the_same_subnet_on_a_second_interface_says_so_not_to_edit_routes(
        node_ns, pod_ns, make_netns, ipam_dir):
    """`lab pod add --ifname net2` of the network a pod already has on eth0: the collision is
    our own subnet route, which no ipam.routes change can avoid; the hint must not offer one."""
    _cluster_eth0(pod_ns, make_netns("same"), "10.250.20.0/24")
    conf = host_local_conf(ipam_dir, "10.250.20.0/24")
    conf["ipam"]["routes"] = []
    add = run_plugin(node_ns, "ADD", conf, netns=pod_ns, ifname="net2")
    assert add.returncode == 1 and add.json["code"] == 102, add
    msg, details = add.json["msg"], add.json["details"]
    assert "route 10.250.20.0/24 via 10.250.20.1 dev net2 collides" in msg, msg
    assert "is this network's pod subnet and eth0 already routes it" in details, details
    assert "ipam.routes" not in details, details
    assert links(node_ns) == ["lo"] and leases(ipam_dir, "cnp1net") == []


def test_del_removes_a_host_veth_an_add_killed_before_naming_it(node_ns, pod_ns, ipam_dir):
    """What SIGKILL between creating the pair and setting the alias leaves: our name, no
    alias, the peer in the pod. DEL takes it (and the lease) away."""
    conf = host_local_conf(ipam_dir, "10.250.20.0/24")
    add = run_plugin(node_ns, "ADD", conf, netns=pod_ns)
    assert add.returncode == 0, add
    host = host_veth_name("cnp1net", "ctr1", "eth0")
    subprocess.run(["ip", "-n", node_ns, "link", "set", host, "alias", ""], check=True)
    assert run_plugin(node_ns, "DEL", conf, netns=pod_ns).returncode == 0
    assert_nothing_left(node_ns, pod_ns, ipam_dir)
