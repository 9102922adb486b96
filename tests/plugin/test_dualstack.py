"""IPv6-only and dual-stack attachments on one node, on a real kernel with the real host-local:
the pod and host sides of both families, usable the moment ADD answers (no DAD wait), CHECK
after tampering, DEL and GC leaving nothing, every CNI version's result, and the pod side as
the reference ptp wires it.
"""
from __future__ import annotations

import ipaddress
import json
import subprocess

import pytest
from cnitest import (
    CNI_PATH,
    addresses,
    host_local_conf,
    leases,
    links,
    ns_run,
    routes,
    run_plugin,
)

from plugin.cni.wiring import host_veth_name

pytestmark = pytest.mark.root
VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
V6 = "fd00:250:1::/64"
STACKS = {"v6": V6, "dual": f"10.250.71.0/24,{V6}"}
NET = "cnp1net"


def sysctl(ns: str, name: str) -> str:
    return ns_run(ns, "sysctl", "-n", name, check=True).stdout.strip()


def ips_of(res: dict, family: int) -> list[dict]:
    return [ip for ip in res["ips"] if ipaddress.ip_interface(ip["address"]).version == family]


def route_pairs(ns: str, family: int) -> set[tuple[str, str]]:
    """(dst, via or dev) of the main-table routes of `family`, but the kernel's link-local."""
    out = json.loads(ns_run(ns, "ip", "-j", f"-{family}", "route", "show", check=True).stdout)
    return {(r["dst"], r.get("gateway") or r["dev"]) for r in out if not
            r["dst"].startswith("fe80:")}


def nothing_left(node_ns: str, pod_ns: str, ipam_dir) -> None:
    assert links(pod_ns) == ["lo"] and links(node_ns) == ["lo"]
    assert leases(ipam_dir, NET) == []
    assert not [r for r in routes(node_ns, 6) if r.startswith("fd00:250:")]
    assert not [r for r in routes(node_ns) if r.startswith("10.250.71.")]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("stack", list(STACKS))
def test_add_check_del_del(stack, version, node_ns, pod_ns, ipam_dir):
    conf = host_local_conf(ipam_dir, STACKS[stack], version=version, mtu=1400)
    add = run_plugin(node_ns, "ADD", conf, netns=pod_ns, container_id="c1")
    assert add.returncode == 0, add
    res = add.json
    assert res["cniVersion"] == version
    host, pod = res["interfaces"]
    assert host["name"] == host_veth_name(NET, "c1", "eth0")
    assert pod["name"] == "eth0" and pod["sandbox"] == f"/run/netns/{pod_ns}"
    assert pod.get("mtu") == (1400 if version == "1.1.0" else None)
    (ip6,) = ips_of(res, 6)
    assert ip6["address"] == "fd00:250:1::2/64" and ip6["gateway"] == "fd00:250:1::1"
    assert ip6["interface"] == 1
    assert ip6.get("version") == ("6" if version < "1.0.0" else None)
    if stack == "dual":
        (ip4,) = ips_of(res, 4)
        assert ip4["address"] == "10.250.71.2/24"
        assert ip4.get("version") == ("4" if version < "1.0.0" else None)
        assert res["routes"] == [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
    else:
        assert ips_of(res, 4) == [] and res["routes"] == [{"dst": "::/0"}]
    assert sorted(leases(ipam_dir, NET)) == sorted(
        ipaddress.ip_interface(ip["address"]).ip.compressed for ip in res["ips"])

    # the pod side: the address usable at once (no DAD), no prefix route, routes via the gw
    mine = addresses(pod_ns, "eth0")["fd00:250:1::2/64"]
    assert mine.get("nodad") and not mine.get("tentative"), mine
    pod_routes = route_pairs(pod_ns, 6)
    assert pod_routes == {("fd00:250:1::1", "eth0"), ("fd00:250:1::/64", "fd00:250:1::1"),
                          ("default", "fd00:250:1::1")}, pod_routes
    # the host side: the gateway (no DAD, no route of its own), the /128 to the pod
    gateway = addresses(node_ns, host["name"])["fd00:250:1::1/128"]
    assert gateway.get("nodad") and not gateway.get("tentative"), gateway
    assert route_pairs(node_ns, 6) == {("fd00:250:1::2", host["name"])}
    assert sysctl(node_ns, "net.ipv6.conf.all.forwarding") == "1"
    assert sysctl(node_ns, "net.ipv4.ip_forward") == ("1" if stack == "dual" else "0")
    assert sysctl(node_ns, f"net.ipv6.conf.{host['name']}.accept_ra") == "0"
    ping = ns_run(pod_ns, "ping", "-6", "-c1", "-W2", "fd00:250:1::1")
    assert ping.returncode == 0, ping.stdout  # right after ADD: nothing tentative

    check = run_plugin(node_ns, "CHECK", dict(conf, prevResult=res), netns=pod_ns,
                       container_id="c1")
    assert check.returncode == 0 and check.stdout == "", check
    for _ in range(2):
        gone = run_plugin(node_ns, "DEL", dict(conf, prevResult=res), netns=pod_ns,
                          container_id="c1")
        assert gone.returncode == 0 and gone.stdout == "", gone
        nothing_left(node_ns, pod_ns, ipam_dir)


def test_an_ipv4_attachment_leaves_ipv6_forwarding_off(node_ns, pod_ns, ipam_dir):
    assert sysctl(node_ns, "net.ipv6.conf.all.forwarding") == "0"
    add = run_plugin(node_ns, "ADD", host_local_conf(ipam_dir, "10.250.72.0/24"), netns=pod_ns)
    assert add.returncode == 0, add
    assert sysctl(node_ns, "net.ipv6.conf.all.forwarding") == "0"
    assert sysctl(node_ns, "net.ipv4.ip_forward") == "1"
    host = add.json["interfaces"][0]["name"]
    # a pod's router advertisements are not the node's business, whatever the family
    assert sysctl(node_ns, f"net.ipv6.conf.{host}.accept_ra") == "0"
    assert sysctl(node_ns, f"net.ipv6.conf.{host}.accept_dad") == "0"


def test_two_pods_reach_each_other_over_both_families(node_ns, make_netns, ipam_dir):
    conf = host_local_conf(ipam_dir, STACKS["dual"])
    pods = [make_netns("pod"), make_netns("pod")]
    results = []
    for n, pod in enumerate(pods):
        add = run_plugin(node_ns, "ADD", conf, netns=pod, container_id=f"c{n}")
        assert add.returncode == 0, add
        results.append(add.json)
    for family in (4, 6):
        target = ips_of(results[1], family)[0]["address"].split("/")[0]
        # within a second of ADD: no address on the way (the host veth's link-local the
        # node solicits from included) waits out DAD, which takes at least a second
        ping = ns_run(pods[0], "ping", f"-{family}", "-c1", "-W1", target)
        assert ping.returncode == 0, (family, ping.stdout)


def test_check_reports_tampered_ipv6_addresses_and_routes(node_ns, pod_ns, ipam_dir):
    conf = host_local_conf(ipam_dir, STACKS["dual"])
    res = run_plugin(node_ns, "ADD", conf, netns=pod_ns).json
    host = res["interfaces"][0]["name"]
    ns_run(pod_ns, "ip", "-6", "route", "del", "default", check=True)
    ns_run(pod_ns, "ip", "-6", "addr", "del", "fd00:250:1::2/64", "dev", "eth0", check=True)
    ns_run(node_ns, "ip", "-6", "route", "del", "fd00:250:1::2/128", check=True)
    ns_run(node_ns, "ip", "-6", "addr", "del", "fd00:250:1::1/128", "dev", host, check=True)
    check = run_plugin(node_ns, "CHECK", dict(conf, prevResult=res), netns=pod_ns)
    assert check.returncode == 1 and check.json["code"] == 103, check
    details = check.json["details"].splitlines()
    assert details == [
        "pod: address fd00:250:1::2/64 is missing on eth0 (has 10.250.71.2/24)",
        "pod: route ::/0 is missing",
        f"node: route fd00:250:1::2/128 dev {host} is missing",
        f"node: gateway fd00:250:1::1/128 is missing on {host}"], details
    # the IPv4 half is as added, and says nothing
    assert not any("10.250.71" in line for line in details[1:])


def test_check_reads_any_spelling_of_an_ipv6_result(node_ns, pod_ns, ipam_dir):
    """A runtime may hand back prevResult with addresses written out in full."""
    conf = host_local_conf(ipam_dir, V6)
    res = run_plugin(node_ns, "ADD", conf, netns=pod_ns).json
    res["ips"][0]["address"] = "FD00:0250:0001:0000:0000:0000:0000:0002/64"
    res["routes"] = [{"dst": "0:0:0:0:0:0:0:0/0", "gw": "fd00:250:1:0:0:0:0:1"}]
    check = run_plugin(node_ns, "CHECK", dict(conf, prevResult=res), netns=pod_ns)
    assert check.returncode == 0, check


def leak_a_lease(ipam_dir, container_id: str) -> list[str]:
    """A dual-stack allocation with no interface, as a crashed runtime leaves it."""
    conf = host_local_conf(ipam_dir, STACKS["dual"], version="1.0.0")
    p = subprocess.run([f"{CNI_PATH}/host-local"], input=json.dumps(conf).encode(),
                       capture_output=True, check=True,
                       env={"CNI_COMMAND": "ADD", "CNI_CONTAINERID": container_id,
                            "CNI_NETNS": "/nonexistent", "CNI_IFNAME": "eth0",
                            "CNI_PATH": CNI_PATH})
    return [ip["address"].split("/")[0] for ip in json.loads(p.stdout)["ips"]]


def test_gc_removes_ipv6_leases_and_attachments(node_ns, make_netns, ipam_dir):
    conf = host_local_conf(ipam_dir, STACKS["dual"], version="1.1.0")
    results = {}
    for cid in ("keep", "drop"):
        add = run_plugin(node_ns, "ADD", conf, netns=make_netns("pod"), container_id=cid)
        assert add.returncode == 0, add
        results[cid] = add.json
    orphans = leak_a_lease(ipam_dir, "orphan")
    assert any(":" in ip for ip in orphans)
    gc = run_plugin(node_ns, "GC", dict(conf, **{"cni.dev/valid-attachments": [
        {"containerID": "keep", "ifname": "eth0"}]}))
    assert gc.returncode == 0 and gc.stdout == "", gc
    kept = sorted(ip["address"].split("/")[0] for ip in results["keep"]["ips"])
    assert sorted(leases(ipam_dir, NET)) == kept
    assert links(node_ns) == sorted(["lo", results["keep"]["interfaces"][0]["name"]])
    dropped = [ip["address"].split("/")[0] for ip in results["drop"]["ips"]]
    assert not [r for r in routes(node_ns, 6) + routes(node_ns)
                if r.split()[0] in dropped]


def test_a_pod_namespace_with_ipv6_off_gets_it_on_its_interface(node_ns, pod_ns, ipam_dir):
    """A namespace whose default is disable_ipv6=1 (lo and new interfaces without IPv6):
    ADD turns IPv6 on for eth0 and lo, as ptp does."""
    for name in ("default", "lo"):
        ns_run(pod_ns, "sysctl", "-qw", f"net.ipv6.conf.{name}.disable_ipv6=1", check=True)
    add = run_plugin(node_ns, "ADD", host_local_conf(ipam_dir, V6), netns=pod_ns)
    assert add.returncode == 0, add
    assert sysctl(pod_ns, "net.ipv6.conf.eth0.disable_ipv6") == "0"
    assert sysctl(pod_ns, "net.ipv6.conf.lo.disable_ipv6") == "0"
    assert "fd00:250:1::2/64" in addresses(pod_ns, "eth0")
    assert ns_run(pod_ns, "ping", "-6", "-c1", "-W2", "fd00:250:1::1").returncode == 0


@pytest.mark.parametrize("step", ["ipam", "pod", "host"])
def test_a_failed_dual_stack_add_takes_back_both_families(step, node_ns, pod_ns, ipam_dir):
    conf = host_local_conf(ipam_dir, STACKS["dual"])
    add = run_plugin(node_ns, "ADD", conf, netns=pod_ns,
                     extra_env={"CNILAB_TEST_FAIL_AFTER": step})
    assert add.returncode == 1 and add.json["code"] == 199, add
    nothing_left(node_ns, pod_ns, ipam_dir)
    assert route_pairs(pod_ns, 6) == set() and routes(pod_ns) == []


def test_an_ipv6_default_route_beside_eth0s_is_refused_with_the_fix(node_ns, pod_ns, ipam_dir):
    """A secondary network (net1) whose IPAM routes ::/0 while eth0 holds the default."""
    ns_run(pod_ns, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other0",
           check=True)
    ns_run(pod_ns, "ip", "link", "set", "eth0", "up", check=True)
    ns_run(pod_ns, "ip", "-6", "route", "add", "default", "dev", "eth0", check=True)
    conf = host_local_conf(ipam_dir, STACKS["dual"])
    conf["ipam"]["routes"] = [{"dst": "10.250.0.0/16"}, {"dst": "::/0"}]
    add = run_plugin(node_ns, "ADD", conf, netns=pod_ns, ifname="net1")
    assert add.returncode == 1 and add.json["code"] == 102, add
    assert "the pod already has a route to ::/0" in add.json["msg"], add.json
    assert '[{"dst": "fd00:250:1::/64"}]' in add.json["details"], add.json
    assert links(pod_ns) == ["eth0", "lo", "other0"] and leases(ipam_dir, NET) == []


def test_the_pod_side_is_wired_as_the_reference_ptp_wires_it(node_ns, make_netns, ipam_dir):
    """Same dual-stack network, one pod each: the same routes in the pod (the kernel's
    link-local aside), and the same /32 and /128 routes to the pod on the node."""
    wired = {}
    for kind in ("ptp", "cnilab"):
        pod = make_netns("pod")
        conf = host_local_conf(ipam_dir / kind, STACKS["dual"], version="1.0.0", type=kind)
        argv = {"plugin_argv": (f"{CNI_PATH}/ptp",)} if kind == "ptp" else {}
        add = run_plugin(node_ns, "ADD", conf, netns=pod, container_id=kind, **argv)
        assert add.returncode == 0, add
        host = add.json["interfaces"][0]["name"]
        node_routes = {f: {via for dst, via in route_pairs(node_ns, f)
                           if dst.startswith(("10.250.71.2", "fd00:250:1::2"))} for f in (4, 6)}
        wired[kind] = ({f: route_pairs(pod, f) for f in (4, 6)}, node_routes, host)
        # next one: a fresh lease directory, the same addresses
        run_plugin(node_ns, "DEL", conf, netns=pod, container_id=kind, **argv)
        assert links(node_ns) == ["lo"]
    (ptp_pod, ptp_node, ptp_host), (our_pod, our_node, our_host) = wired["ptp"], wired["cnilab"]
    assert ("default", "fd00:250:1::1") in ptp_pod[6] and ("default", "10.250.71.1") in ptp_pod[4]
    assert our_pod == ptp_pod, (our_pod, ptp_pod)
    assert ptp_node == {4: {ptp_host}, 6: {ptp_host}}
    assert our_node == {4: {our_host}, 6: {our_host}}


def test_an_ipam_answer_unlike_its_config_is_wired_as_answered(node_ns, pod_ns, tmp_path):
    """ADD routes the pod through the gateways host-local's config names while IPAM still
    works. An answer with other gateways (here a wrapper around nothing but echo) takes
    those routes back out and wires what it says, nothing else."""
    answer = {"cniVersion": "1.0.0", "ips": [
        {"address": "10.250.73.5/24", "gateway": "10.250.73.254"},
        {"address": "fd00:250:3::5/64", "gateway": "fd00:250:3::fe"}],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]}
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "host-local").write_text(
        "#!/bin/sh\ncat >/dev/null\n"
        f"[ \"$CNI_COMMAND\" = ADD ] && echo '{json.dumps(answer)}'\nexit 0\n")
    (bin_dir / "host-local").chmod(0o755)
    conf = host_local_conf(tmp_path / "ipam", "10.250.73.0/24,fd00:250:3::/64")
    add = run_plugin(node_ns, "ADD", conf, netns=pod_ns, path=str(bin_dir))
    assert add.returncode == 0, add
    host = add.json["interfaces"][0]["name"]
    assert route_pairs(pod_ns, 4) == {("10.250.73.254", "eth0"), ("default", "10.250.73.254"),
                                      ("10.250.73.0/24", "10.250.73.254")}
    assert route_pairs(pod_ns, 6) == {("fd00:250:3::fe", "eth0"), ("default", "fd00:250:3::fe"),
                                      ("fd00:250:3::/64", "fd00:250:3::fe")}
    assert set(addresses(node_ns, host, 4)) == {"10.250.73.254/32"}
    assert set(addresses(node_ns, host, 6)) - {a for a in addresses(node_ns, host, 6)
                                               if a.startswith("fe80:")} == {"fd00:250:3::fe/128"}
    check = run_plugin(node_ns, "CHECK", dict(conf, prevResult=add.json), netns=pod_ns,
                       path=str(bin_dir))
    assert check.returncode == 0, check
    assert run_plugin(node_ns, "DEL", conf, netns=pod_ns, path=str(bin_dir)).returncode == 0
    assert links(node_ns) == ["lo"] and links(pod_ns) == ["lo"]
