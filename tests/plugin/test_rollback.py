"""A failing ADD takes back everything it did: no interface, no route, no lease remains."""
from __future__ import annotations

import subprocess

import pytest
from cnitest import host_local_conf, leases, links, ns_run, routes, run_plugin

from plugin.wiring import host_veth_name

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
