"""ADD -> CHECK -> DEL -> DEL on a real kernel, at every CNI version the plugin speaks.

Each test makes a node namespace and pod namespaces, runs the plugin inside the node the way a
runtime would, with the real host-local from /usr/lib/cni keeping its leases under tmp_path.
"""
from __future__ import annotations

import json

import pytest
from cnitest import host_local_conf, leases, links, ns_run, routes, run_plugin

from plugin.cni.wiring import host_veth_name

pytestmark = pytest.mark.root
VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]


def with_prev(conf: dict, prev: dict) -> dict:
    return dict(conf, prevResult=prev)


@pytest.mark.parametrize("version", VERSIONS)
def test_add_check_del_del(version, node_ns, pod_ns, ipam_dir):
    conf = host_local_conf(ipam_dir, "10.250.1.0/24", version=version, mtu=1400,
                           dns={"nameservers": ["10.250.1.53"]})
    add = run_plugin(node_ns, "ADD", conf, netns=pod_ns, container_id="c1")
    assert add.returncode == 0, add
    res = add.json
    assert res["cniVersion"] == version
    host, pod = res["interfaces"]
    assert host["name"] == host_veth_name("cnp1net", "c1", "eth0")
    assert pod["name"] == "eth0" and pod["sandbox"] == f"/run/netns/{pod_ns}"
    ip = res["ips"][0]
    assert ip["address"] == "10.250.1.2/24" and ip["gateway"] == "10.250.1.1"
    assert ip["interface"] == 1
    assert ("version" in ip) == (version < "1.0.0")
    assert ("mtu" in pod) == (version == "1.1.0")
    assert res["dns"] == {"nameservers": ["10.250.1.53"]}
    assert leases(ipam_dir, "cnp1net") == ["10.250.1.2"]

    # the kernel holds what the result says
    show = json.loads(ns_run(pod_ns, "ip", "-j", "addr", "show", "eth0", check=True).stdout)[0]
    assert show["mtu"] == 1400 and show["address"] == pod["mac"]
    assert any(a["local"] == "10.250.1.2" and a["prefixlen"] == 24 for a in show["addr_info"])
    pod_routes = routes(pod_ns)
    assert any(r.startswith("default via 10.250.1.1 dev eth0") for r in pod_routes)
    assert any(r.startswith("10.250.1.1 dev eth0") and "scope link" in r for r in pod_routes)
    assert any(r.startswith("10.250.1.0/24 via 10.250.1.1") for r in pod_routes)
    assert any(r.startswith(f"10.250.1.2 dev {host['name']}") for r in routes(node_ns))
    assert ns_run(node_ns, "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
    ping = ns_run(pod_ns, "ping", "-c1", "-W2", "10.250.1.1")
    assert ping.returncode == 0, ping.stdout

    check = run_plugin(node_ns, "CHECK", with_prev(conf, res), netns=pod_ns, container_id="c1")
    assert check.returncode == 0 and check.stdout == "", check

    for _ in range(2):
        gone = run_plugin(node_ns, "DEL", with_prev(conf, res), netns=pod_ns,
                          container_id="c1")
        assert gone.returncode == 0 and gone.stdout == "", gone
        assert links(pod_ns) == ["lo"] and links(node_ns) == ["lo"]
        assert leases(ipam_dir, "cnp1net") == []
        assert not any("10.250.1.2" in r for r in routes(node_ns))


def test_two_pods_reach_each_other_through_the_node(node_ns, make_netns, ipam_dir):
    conf = host_local_conf(ipam_dir, "10.250.2.0/24")
    pods = [make_netns("pod"), make_netns("pod")]
    ips = []
    for n, pod in enumerate(pods):
        add = run_plugin(node_ns, "ADD", conf, netns=pod, container_id=f"c{n}")
        assert add.returncode == 0, add
        ips.append(add.json["ips"][0]["address"].split("/")[0])
    assert ips[0] != ips[1]
    ping = ns_run(pods[0], "ping", "-c1", "-W2", ips[1])
    assert ping.returncode == 0, ping.stdout


def test_check_reports_each_mismatch(node_ns, pod_ns, ipam_dir):
    conf = host_local_conf(ipam_dir, "10.250.3.0/24")
    res = run_plugin(node_ns, "ADD", conf, netns=pod_ns).json
    ns_run(pod_ns, "ip", "route", "del", "default", check=True)
    ns_run(node_ns, "ip", "route", "del", "10.250.3.2/32", check=True)
    check = run_plugin(node_ns, "CHECK", with_prev(conf, res), netns=pod_ns)
    assert check.returncode == 1
    body = check.json
    assert body["code"] == 103
    assert "route 0.0.0.0/0 is missing" in body["details"]
    assert "10.250.3.2/32" in body["details"]

    ns_run(pod_ns, "ip", "link", "del", "eth0", check=True)
    check = run_plugin(node_ns, "CHECK", with_prev(conf, res), netns=pod_ns)
    assert check.json["code"] == 103 and "eth0 is missing" in check.json["msg"]


def test_check_wrong_mac_in_prev_result(node_ns, pod_ns, ipam_dir):
    conf = host_local_conf(ipam_dir, "10.250.4.0/24")
    res = run_plugin(node_ns, "ADD", conf, netns=pod_ns).json
    res["interfaces"][1]["mac"] = "02:00:00:00:00:01"
    check = run_plugin(node_ns, "CHECK", with_prev(conf, res), netns=pod_ns)
    assert check.json["code"] == 103 and "MAC" in check.json["msg"]


def test_add_in_a_conflist_merges_prev_result(node_ns, pod_ns, ipam_dir):
    """A second network on net1 after another plugin made eth0: prevResult is carried on."""
    ns_run(pod_ns, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other0",
           check=True)
    ns_run(pod_ns, "ip", "link", "set", "eth0", "up", check=True)
    ns_run(pod_ns, "ip", "route", "add", "192.168.0.0/16", "dev", "eth0", check=True)
    prev = {"cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "sandbox": f"/run/netns/{pod_ns}"}],
            "ips": [{"address": "192.168.77.2/24", "interface": 0}],
            "routes": [{"dst": "192.168.0.0/16"}]}
    conf = host_local_conf(ipam_dir, "10.250.5.0/24", version="1.0.0", prevResult=prev)
    conf["ipam"]["routes"] = [{"dst": "10.99.0.0/16"}]
    add = run_plugin(node_ns, "ADD", conf, netns=pod_ns, ifname="net1")
    assert add.returncode == 0, add
    res = add.json
    assert [i["name"] for i in res["interfaces"]][::2] == ["eth0", "net1"]
    assert res["ips"][0]["address"] == "192.168.77.2/24"
    assert res["ips"][1]["interface"] == 2
    assert {r["dst"] for r in res["routes"]} == {"192.168.0.0/16", "10.99.0.0/16"}
    check = run_plugin(node_ns, "CHECK", dict(conf, prevResult=res), netns=pod_ns,
                       ifname="net1")
    assert check.returncode == 0, check
    assert run_plugin(node_ns, "DEL", conf, netns=pod_ns, ifname="net1").returncode == 0
    assert links(pod_ns) == ["eth0", "lo", "other0"]  # the other plugin's interface stays


def test_add_refuses_an_existing_interface_and_leaks_nothing(node_ns, pod_ns, ipam_dir):
    ns_run(pod_ns, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other0",
           check=True)
    conf = host_local_conf(ipam_dir, "10.250.6.0/24")
    add = run_plugin(node_ns, "ADD", conf, netns=pod_ns)
    assert add.returncode == 1 and add.json["code"] == 101, add
    assert "eth0 already exists" in add.json["msg"]
    assert leases(ipam_dir, "cnp1net") == [] and links(node_ns) == ["lo"]
    # the runtime's cleanup DEL must not remove someone else's eth0
    assert run_plugin(node_ns, "DEL", conf, netns=pod_ns).returncode == 0
    assert links(pod_ns) == ["eth0", "lo", "other0"]


@pytest.mark.parametrize("netns", ["", "/run/netns/cnp1-never-made", "gone"])
def test_del_succeeds_when_things_are_gone(netns, node_ns, make_netns, ipam_dir):
    conf = host_local_conf(ipam_dir, "10.250.7.0/24")
    pod = make_netns("pod")
    assert run_plugin(node_ns, "ADD", conf, netns=pod).returncode == 0
    if netns == "gone":
        ns_run(node_ns, "true")
        import subprocess

        subprocess.run(["ip", "netns", "del", pod], check=True)
        netns = f"/run/netns/{pod}"
    gone = run_plugin(node_ns, "DEL", conf, netns=netns)
    assert gone.returncode == 0, gone
    assert leases(ipam_dir, "cnp1net") == []
    assert links(node_ns) == ["lo"]
    assert not any("10.250.7." in r for r in routes(node_ns))
    assert not __import__("os").path.exists("/run/netns/cnp1-never-made")  # never created


def test_del_of_an_attachment_never_added(node_ns, pod_ns, ipam_dir):
    conf = host_local_conf(ipam_dir, "10.250.8.0/24")
    gone = run_plugin(node_ns, "DEL", conf, netns=pod_ns, container_id="never")
    assert gone.returncode == 0, gone


def test_status_ready_at_1_1_0(node_ns, ipam_dir):
    conf = host_local_conf(ipam_dir)
    status = run_plugin(node_ns, "STATUS", conf, drop_env=["CNI_CONTAINERID", "CNI_IFNAME"])
    assert status.returncode == 0 and status.stdout == "", status


def test_status_50_when_ipam_is_missing(node_ns, ipam_dir, tmp_path):
    conf = host_local_conf(ipam_dir)
    status = run_plugin(node_ns, "STATUS", conf, path=str(tmp_path))
    assert status.returncode == 1 and status.json["code"] == 50, status


def test_status_51_when_cross_node_routes_are_missing(node_ns, ipam_dir):
    """host-gw with a peer whose route was never programmed: existing pods are affected."""
    conf = host_local_conf(ipam_dir, backend="host-gw", nodeName="n1", nodes=[
        {"name": "n1", "ip": "10.251.0.1", "podSubnet": "10.250.0.0/24"},
        {"name": "n2", "ip": "10.251.0.2", "podSubnet": "10.250.100.0/24"}])
    status = run_plugin(node_ns, "STATUS", conf)
    assert status.returncode == 1 and status.json["code"] == 51, status


@pytest.mark.parametrize("version", VERSIONS)
def test_version_answers_whatever_version_is_asked(version, node_ns):
    run = run_plugin(node_ns, "VERSION", {"cniVersion": version})
    assert run.returncode == 0, run
    assert run.json == {"cniVersion": "1.1.0", "supportedVersions": VERSIONS}


@pytest.mark.parametrize("version", ["0.3.1", "1.0.0"])
@pytest.mark.parametrize("command", ["STATUS", "GC"])
def test_status_and_gc_before_1_1_0_are_code_1(command, version, node_ns, ipam_dir):
    conf = host_local_conf(ipam_dir, version=version, **{"cni.dev/valid-attachments": []})
    run = run_plugin(node_ns, command, conf)
    assert run.returncode == 1 and run.json["code"] == 1, run


def test_ipam_gets_this_nodes_subnet_when_it_names_none(node_ns, pod_ns, ipam_dir, tmp_path):
    """A cluster-wide config: host-local without ranges allocates from this node's podSubnet
    (a one-node cluster, so no peer needs a route)."""
    conf = host_local_conf(ipam_dir, backend="host-gw", nodeName="solo",
                           nodes=[{"name": "solo", "ip": "10.251.9.1",
                                   "podSubnet": "10.250.90.0/24"}])
    del conf["ipam"]["ranges"]
    run_dir = {"CNILAB_RUN_DIR": str(tmp_path)}  # cross-node locks stay in the test's dir
    add = run_plugin(node_ns, "ADD", conf, netns=pod_ns, extra_env=run_dir)
    assert add.returncode == 0, add
    assert add.json["ips"][0]["address"] == "10.250.90.2/24"
    check = run_plugin(node_ns, "CHECK", dict(conf, prevResult=add.json), netns=pod_ns,
                       extra_env=run_dir)
    assert check.returncode == 0, check
    assert run_plugin(node_ns, "DEL", conf, netns=pod_ns, extra_env=run_dir).returncode == 0
    assert leases(ipam_dir, "cnp1net") == [] and links(node_ns) == ["lo"]


@pytest.mark.parametrize("prev", ["not an object", {"ips": [{"address": "nonsense"}]},
                                  {"interfaces": "x"}, {"ips": [{"address": "10.250.9.2/24",
                                                                 "interface": 99}]}])
def test_del_with_an_unreadable_prev_result_releases_what_it_can_and_succeeds(
        prev, node_ns, pod_ns, ipam_dir):
    conf = host_local_conf(ipam_dir, "10.250.9.0/24")
    add = run_plugin(node_ns, "ADD", conf, netns=pod_ns)
    assert add.returncode == 0, add
    for _ in range(2):  # and again: a runtime retries DEL until it succeeds
        gone = run_plugin(node_ns, "DEL", with_prev(conf, prev), netns=pod_ns)
        assert gone.returncode == 0 and gone.stdout == "", gone
        assert "ignores the prevResult" in gone.stderr
    assert links(pod_ns) == ["lo"] and links(node_ns) == ["lo"]
    assert leases(ipam_dir, "cnp1net") == []


@pytest.mark.parametrize("command", ["ADD", "CHECK"])
@pytest.mark.parametrize("which", ["node", "self"])
def test_the_nodes_own_namespace_is_never_taken_for_a_pod(command, which, node_ns, ipam_dir):
    netns = {"node": f"/run/netns/{node_ns}", "self": "/proc/self/ns/net"}[which]
    conf = host_local_conf(ipam_dir, "10.250.8.0/24")
    if command == "CHECK":
        conf = with_prev(conf, {"cniVersion": "1.1.0", "interfaces": [
            {"name": "eth0", "sandbox": netns}], "ips": [], "routes": []})
    before = routes(node_ns)
    run = run_plugin(node_ns, command, conf, netns=netns)
    assert run.returncode == 1 and run.json["code"] == 4, run
    assert "node's own network namespace" in run.json["msg"]
    assert links(node_ns) == ["lo"] and routes(node_ns) == before
    assert leases(ipam_dir, "cnp1net") == []
