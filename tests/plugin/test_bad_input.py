"""Bad input, end to end: each case gets the right code as CNI error JSON, no traceback,
and leaves no interface, route, lease or namespace behind."""
from __future__ import annotations

import json
import os

import pytest
from cnitest import host_local_conf, leases, links, routes, run_plugin

pytestmark = pytest.mark.root
SUBNET = "10.250.60.0/24"


def assert_clean_error(run, code: int, needle: str = "") -> dict:
    assert run.returncode == 1, run
    body = json.loads(run.stdout)
    assert set(body) == {"cniVersion", "code", "msg", "details"}
    assert body["code"] == code, body
    assert needle in body["msg"] + body["details"], body
    assert "Traceback" not in run.stdout + run.stderr
    return body


def assert_nothing_leaked(node_ns, pod_ns, ipam_dir):
    assert links(node_ns) == ["lo"] and links(pod_ns) == ["lo"]
    assert routes(pod_ns) == [] and routes(node_ns) == []
    assert leases(ipam_dir, "cnp1net") == []


def conf_without(ipam_dir, *path: str) -> dict:
    conf = host_local_conf(ipam_dir, SUBNET)
    target = conf
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return conf


CASES = {
    "malformed JSON": (dict(stdin=b'{"cniVersion": "1.0.0", "name":'), 6, "decode"),
    "not an object": (dict(stdin=b'"just a string"'), 6, "JSON object"),
    "missing name": (dict(conf=lambda d: conf_without(d, "name")), 7, "name"),
    "missing ipam": (dict(conf=lambda d: conf_without(d, "ipam")), 7, "ipam"),
    "missing cniVersion": (dict(conf=lambda d: conf_without(d, "cniVersion")), 7,
                           "cniVersion"),
    "unknown cniVersion": (dict(conf=lambda d: host_local_conf(d, SUBNET, version="9.9.9")),
                           1, "9.9.9"),
    "missing CNI_COMMAND": (dict(drop_env=["CNI_COMMAND"]), 4, "CNI_COMMAND"),
    "missing CNI_NETNS": (dict(drop_env=["CNI_NETNS"]), 4, "CNI_NETNS"),
    "missing CNI_CONTAINERID": (dict(drop_env=["CNI_CONTAINERID"]), 4, "CNI_CONTAINERID"),
    "unknown command": (dict(extra_env={"CNI_COMMAND": "REBOOT"}), 4, "REBOOT"),
    "nonexistent netns": (dict(netns="/run/netns/cnp1-does-not-exist"), 3,
                          "/run/netns/cnp1-does-not-exist"),
    "netns is not a namespace": (dict(netns="/etc/hostname"), 4, "/etc/hostname"),
    "unknown IPAM type": (dict(conf=lambda d: dict(host_local_conf(d, SUBNET),
                                                   ipam={"type": "no-such-ipam"})),
                          7, "no-such-ipam"),
    "IPAM config error": (dict(conf=lambda d: dict(host_local_conf(d, SUBNET),
                                                   ipam={"type": "host-local",
                                                         "dataDir": str(d)})),
                          100, "host-local"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, node_ns, pod_ns, ipam_dir):
    kwargs, code, needle = CASES[case]
    kwargs = dict(kwargs)
    make_conf = kwargs.pop("conf", None)
    conf = make_conf(ipam_dir) if make_conf else host_local_conf(ipam_dir, SUBNET)
    kwargs.setdefault("netns", pod_ns)
    run = run_plugin(node_ns, kwargs.pop("command", "ADD"), conf, **kwargs)
    assert_clean_error(run, code, needle)
    assert_nothing_leaked(node_ns, pod_ns, ipam_dir)
    assert not os.path.exists("/run/netns/cnp1-does-not-exist")


def test_exhausted_subnet(node_ns, make_netns, ipam_dir):
    """A /30 holds one pod (gateway .1, pod .2): the second ADD fails cleanly."""
    conf = host_local_conf(ipam_dir, "10.250.61.0/30")
    first, second = make_netns("pod"), make_netns("pod")
    assert run_plugin(node_ns, "ADD", conf, netns=first, container_id="a").returncode == 0
    run = run_plugin(node_ns, "ADD", conf, netns=second, container_id="b")
    assert_clean_error(run, 100, "no IP addresses available")
    assert links(second) == ["lo"]
    assert leases(ipam_dir, "cnp1net") == ["10.250.61.2"]
    assert len(links(node_ns)) == 2  # lo and the first pod's veth only


def test_del_with_bad_config_still_answers_json(node_ns, pod_ns, ipam_dir):
    run = run_plugin(node_ns, "DEL", stdin=b"{oops", netns=pod_ns)
    assert_clean_error(run, 6)
