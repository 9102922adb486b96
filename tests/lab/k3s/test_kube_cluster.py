"""KubeCluster: pure parts unit-tested; node-side CHECK/GC glue run for real on overlay nodes.

Not run here: anything behind KubeApi (pod create/read/list/delete, exec over the API stream)
needs a live K3s API server. The tests below put a small in-memory stand-in at that boundary
and nowhere else.
"""
from __future__ import annotations

import base64
import json

import kubernetes_validate
import pytest

from lab.api import CommandResult, LabError, NetworkSpec
from lab.config import parse_config
from lab.config.k3s import K3sSettings
from lab.drivers.kube_cluster import (
    KubeCluster,
    cni_args_text,
    events_text,
    find_pod_attachment,
    netns_from_inspectp,
    netns_name_of,
    parse_libcni_cache,
    pod_failure,
    pod_ip_from,
    pod_manifest,
    pod_netns_lookup,
    pod_of,
    pod_phase_problem,
    teardown_check,
    valid_attachments,
)
from lab.kube import cmdlines, kubeconfig
from lab.kube.kubeapi import exec_status

SPEC = NetworkSpec(name="cnilab", plugin_type="cnilab", ifname="net1",
                   cni_path="/var/lib/rancher/k3s/data/cni", configs={})
ARGS = [["IgnoreUnknown", "true"], ["K8S_POD_NAMESPACE", "cnilab"], ["K8S_POD_NAME", "a"],
        ["K8S_POD_INFRA_CONTAINER_ID", "c0ffee"], ["K8S_POD_UID", "u1"]]
RESULT = {"cniVersion": "1.1.0", "interfaces": [{"name": "net1", "sandbox": "/var/run/netns/x"}],
          "ips": [{"address": "10.244.1.5/24", "interface": 0}]}


def _cache(container_id="c0ffee", pod="a", netns="/var/run/netns/cni-1", ifname="net1"):
    args = [[k, pod if k == "K8S_POD_NAME" else v] for k, v in ARGS]
    doc = {"kind": "cniCacheV1", "containerId": container_id, "ifName": ifname,
           "networkName": "cnilab", "cniArgs": args, "result": RESULT,
           "config": base64.b64encode(b'{"type":"cnilab"}').decode()}
    if netns:
        doc["netns"] = netns
    return json.dumps(doc)


def test_pod_manifest_validates_and_pins():
    doc = pod_manifest("a", "node2", lab="demo", settings=K3sSettings(), spec=SPEC,
                       image="registry.local/netshoot:v1", pull_policy="Never")
    kubernetes_validate.validate(doc, "1.35.0", strict=True)
    assert doc["spec"]["nodeName"] == "node2"
    container = doc["spec"]["containers"][0]
    assert (container["image"], container["imagePullPolicy"]) == ("registry.local/netshoot:v1",
                                                                  "Never")
    assert json.loads(doc["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"]) == [
        {"name": "cnilab", "namespace": "cnilab", "interface": "net1"}]
    assert doc["metadata"]["labels"]["cnilab.dev/lab"] == "demo"
    primary = pod_manifest("a", "n", lab="x", settings=K3sSettings(primary=True), spec=SPEC,
                           image="i", pull_policy="Never")
    assert primary["metadata"]["annotations"] == {}


def test_pod_ip_secondary_and_primary():
    status = json.dumps([{"name": "cbr0", "interface": "eth0", "ips": ["10.42.0.9"]},
                         {"name": "cnilab/cnilab", "interface": "net1", "ips": ["10.244.1.5"]}])
    pod = {"metadata": {"annotations": {"k8s.v1.cni.cncf.io/network-status": status}},
           "status": {"podIP": "10.42.0.9"}}
    assert pod_ip_from(pod, SPEC, K3sSettings()) == "10.244.1.5"
    assert pod_ip_from(pod, SPEC, K3sSettings(primary=True)) == "10.42.0.9"
    assert pod_ip_from({"metadata": {}}, SPEC, K3sSettings()) is None


def test_pod_phase_problem_reads_waiting_reason():
    pod = {"status": {"phase": "Pending", "containerStatuses": [{"state": {"waiting": {
        "reason": "ErrImageNeverPull", "message": "image not present"}}}]}}
    assert pod_phase_problem(pod) == "ErrImageNeverPull: image not present"
    sandbox = {"status": {"phase": "Pending", "conditions": [
        {"type": "PodReadyToStartContainers", "status": "False",
         "message": "failed to setup network for sandbox"}]}}
    assert "failed to setup network" in pod_phase_problem(sandbox)
    assert pod_phase_problem({}) == "Pending"


def test_libcni_cache_parsing_and_matching():
    entry = parse_libcni_cache(_cache())
    assert entry is not None and entry.container_id == "c0ffee"
    assert entry.cni_args.startswith("IgnoreUnknown=true;K8S_POD_NAMESPACE=cnilab;")
    assert pod_of(entry) == ("cnilab", "a")
    assert parse_libcni_cache("not json") is None
    assert parse_libcni_cache('{"kind": "other"}') is None
    other = parse_libcni_cache(_cache("beef", pod="b"))
    assert find_pod_attachment([entry, other], "cnilab", "b", "cnilab", "net1") == other
    assert find_pod_attachment([entry], "cnilab", "a", "cnilab", "eth0") is None
    assert [a.container_id for a in valid_attachments([entry, other], {("cnilab", "b")}, "n")] \
        == ["beef"]
    assert cni_args_text("A=1") == "A=1"


def test_netns_from_inspectp():
    doc = {"info": {"runtimeSpec": {"linux": {"namespaces": [
        {"type": "pid"}, {"type": "network", "path": "/var/run/netns/cni-77"}]}}}}
    assert netns_from_inspectp(json.dumps(doc)) == "/var/run/netns/cni-77"
    assert netns_from_inspectp("{") == ""


def test_a_sandbox_netns_is_asked_of_the_runtime():
    from lab.drivers.kube_cluster import sandbox_netns

    doc = {"info": {"runtimeSpec": {"linux": {"namespaces": [
        {"type": "network", "path": "/var/run/netns/cni-77"}]}}}}

    class Node:
        def __init__(self, rc):
            self.rc, self.argv = rc, None

        def run(self, argv, timeout=None):
            self.argv = argv
            return CommandResult(tuple(argv), self.rc, json.dumps(doc), "")

    node = Node(0)
    assert sandbox_netns(node, "abc") == "/var/run/netns/cni-77"
    assert node.argv == [cmdlines.K3S_BIN, "crictl", "inspectp", "-o", "json", "abc"]
    assert sandbox_netns(Node(1), "abc") == ""


# --- node-side glue on real overlay nodes, the API replaced by a stand-in -------------------

RECORDING_PLUGIN = """#!/bin/sh
d=/var/lib/rancher/calls; mkdir -p $d; n=$(ls $d | wc -l)
env | grep '^CNI_' | sort > $d/$n.env; cat > $d/$n.stdin
[ "$CNI_COMMAND" = CHECK ] && [ -e /var/lib/rancher/tampered ] && {
  echo '{"cniVersion":"1.1.0","code":103,"msg":"net1 address 10.244.1.5/24 missing"}'; exit 1; }
exit 0
"""
CONTAINERD = """version = 3
[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dir = "/var/lib/rancher/k3s/data/cni"
  conf_dir = "/var/lib/rancher/k3s/agent/etc/cni/net.d"
"""


class StandInApi:
    """In-memory stand-in at the KubeApi boundary (no API server here)."""

    def __init__(self, pods):
        self.pods = pods

    def ensure_namespace(self, name):
        pass

    def list_pods(self, namespace, selector):
        return self.pods

    def close(self):
        pass


@pytest.fixture
def k3s_lab(tmp_path, make_node):
    plugin = tmp_path / "cnilab"
    plugin.write_text("#!/bin/sh\n")
    config = parse_config({"lab": {"name": "kc", "provider": "existing",
                                   "state_dir": str(tmp_path / "st")},
                           "nodes": [{"name": "node1", "role": "server"}],
                           "plugin": {"path": str(plugin), "type": "cnilab",
                                      "config": {"name": "cnilab"}},
                           "k3s": {}, "multus": {}})
    node = make_node("node1", "10.99.0.11")
    for path, text, mode in [
            ("/var/lib/rancher/k3s/agent/etc/containerd/config.toml", CONTAINERD, 0o644),
            ("/var/lib/rancher/k3s/data/cni/cnilab", RECORDING_PLUGIN, 0o755),
            ("/var/lib/cni/multus/results/cnilab-c0ffee-net1", _cache(), 0o600),
            ("/var/lib/cni/multus/results/cnilab-dead-net1", _cache("dead", pod="gone"), 0o600)]:
        f = node.file(path)
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
        f.chmod(mode)

    class Lab:
        pass
    lab = Lab()
    lab.config, lab.nodes = config, lambda: [node]
    return lab, node


def _calls(node):
    calls = node.file("/var/lib/rancher/calls")
    return [(calls / f"{i}.env").read_text() for i in range(len(list(calls.glob("*.env"))))], \
        [json.loads((calls / f"{i}.stdin").read_text())
         for i in range(len(list(calls.glob("*.stdin"))))]


def test_cni_check_runs_the_plugin_with_the_cached_result(k3s_lab):
    lab, node = k3s_lab
    cluster = KubeCluster(lab, api=StandInApi([]))
    assert cluster.spec.ifname == "net1"
    assert cluster.pod_subnet("node1") == "10.244.0.0/24"

    class Pod:
        name, node, ifname = "a", "node1", "net1"
    Pod.attachment = type("A", (), {"container_id": "c0ffee"})()
    ok = cluster.cni_check(Pod)
    assert ok.ok, ok.stderr
    envs, stdins = _calls(node)
    assert "CNI_COMMAND=CHECK" in envs[0] and "CNI_CONTAINERID=c0ffee" in envs[0]
    assert "CNI_NETNS=/var/run/netns/cni-1" in envs[0] and "CNI_IFNAME=net1" in envs[0]
    assert "K8S_POD_NAME=a" in envs[0]
    assert "CNI_PATH=/var/lib/rancher/k3s/data/cni" in envs[0]
    assert stdins[0]["prevResult"] == RESULT and stdins[0]["type"] == "cnilab"
    node.file("/var/lib/rancher/tampered").write_text("")
    bad = cluster.cni_check(Pod)
    assert bad.rc == 1 and "net1 address 10.244.1.5/24 missing" in bad.stderr
    Pod.name = "nosuchpod"
    assert "no cached ADD result for pod nosuchpod" in cluster.cni_check(Pod).stderr


def test_gc_lists_only_live_pods_attachments(k3s_lab):
    lab, node = k3s_lab
    live = [{"metadata": {"name": "a"}, "spec": {"nodeName": "node1"}}]
    cluster = KubeCluster(lab, api=StandInApi(live))
    result = cluster.cni_gc("node1")
    assert result.ok, result.stderr
    envs, stdins = _calls(node)
    assert "CNI_COMMAND=GC" in envs[-1]
    assert stdins[-1]["cni.dev/valid-attachments"] == [{"containerID": "c0ffee",
                                                        "ifname": "net1"}]


def test_no_kubeconfig_says_run_lab_up(k3s_lab):
    lab, _ = k3s_lab
    with pytest.raises(LabError, match="no kubeconfig for lab kc") as e:
        KubeCluster(lab)
    assert "lab up" in e.value.hint
    assert kubeconfig.state_path(lab.config.harness_dir).name == "kubeconfig"


def test_host_interfaces_skip_only_the_cluster_networks_bridge(k3s_lab, monkeypatch):
    """flannel's ports on cni0 are not the plugin's; the ports of a bridge the plugin judged
    makes itself are (the leak audit draws the same line: lab.api.bridge_port)."""
    lab, node = k3s_lab
    cluster = KubeCluster(lab, api=StandInApi([]))
    out = ("5: veth1234@if2: <BROADCAST,MULTICAST,UP> mtu 1450 master cni0 state UP\n"
           "6: vethb0b0b0b0@if2: <BROADCAST,MULTICAST,UP> mtu 1500 master br-test state UP\n"
           "7: veth9f8e7d6c@if3: <BROADCAST,MULTICAST,UP> mtu 1500 state UP\n")
    monkeypatch.setattr(node, "run", lambda argv, **kw: CommandResult(tuple(argv), 0, out, ""))
    assert cluster.host_interfaces("node1") == ["veth9f8e7d6c", "vethb0b0b0b0"]
    assert cmdlines.K3S_BIN == "/usr/local/bin/k3s"


def _event(reason, count, message="", kind="Warning"):
    return {"type": kind, "reason": reason, "count": count, "message": message}


def test_a_pod_that_will_not_start_is_told_apart_from_a_slow_one():
    sandbox = ("Failed to create pod sandbox: plugin type=\"multus\" failed (add): "
               "configuring net1 in the pod: route 0.0.0.0/0 exists")
    pending = {"status": {"phase": "Pending"}}
    assert pod_failure(pending, [_event("FailedCreatePodSandBox", 1, sandbox)]) is None
    verdict = pod_failure(pending, [_event("Scheduled", 1, kind="Normal"),
                                    _event("FailedCreatePodSandBox", 2, sandbox)])
    assert verdict is not None and "FailedCreatePodSandBox (x2)" in verdict
    assert "route 0.0.0.0/0 exists" in verdict
    never = {"status": {"phase": "Pending", "containerStatuses": [{"state": {"waiting": {
        "reason": "ErrImageNeverPull", "message": "image localhost/x not present"}}}]}}
    assert pod_failure(never, []) == "ErrImageNeverPull: image localhost/x not present"
    creating = {"status": {"phase": "Pending", "containerStatuses": [{"state": {"waiting": {
        "reason": "ContainerCreating"}}}]}}
    assert pod_failure(creating, [_event("Pulled", 1, kind="Normal")]) is None
    assert events_text([_event("FailedCreatePodSandBox", 3, " x ")]) == \
        "Warning FailedCreatePodSandBox (x3): x"


def test_a_sandbox_failure_repeated_as_new_events_or_a_series_is_fatal_too():
    """Newer kubelets repeat an event as separate objects or as a series, not as `count`:
    the second failure is still a pattern, not a hiccup (a v1.28 Multus lab waited 2 min)."""
    pending = {"status": {"phase": "Pending"}}
    missing_uid = "CmdAdd (shim): CNI request failed with status 400: missing pod UID"
    twice = [_event("FailedCreatePodSandBox", None, missing_uid),
             _event("FailedCreatePodSandBox", None, missing_uid)]
    verdict = pod_failure(pending, twice)
    assert verdict is not None and "(x2)" in verdict and "missing pod UID" in verdict
    series = {"type": "Warning", "reason": "FailedCreatePodSandBox", "message": missing_uid,
              "series": {"count": 3}}
    assert "(x3)" in (pod_failure(pending, [series]) or "")


def test_exec_status_names_a_command_missing_from_the_image():
    missing = json.dumps({"status": "Failure", "message": (
        "OCI runtime exec failed: exec failed: container_linux.go:380: starting container "
        "process caused: exec: \"python3\": executable file not found in $PATH: unknown")})
    rc, why = exec_status(missing)
    assert rc == 127 and "python3" in why
    exit_3 = json.dumps({"status": "Failure", "reason": "NonZeroExitCode", "details": {
        "causes": [{"reason": "ExitCode", "message": "3"}]}})
    assert exec_status(exit_3) == (3, "")
    assert exec_status(json.dumps({"status": "Success"})) == (0, "")
    assert exec_status("") == (None, "")          # no status at all: the stream timed out


def test_teardown_check_lists_what_is_left_of_a_sandbox(tmp_path):
    import subprocess

    results = tmp_path / "results"
    results.mkdir()
    netns = tmp_path / "cni-1234"
    (results / "cnilab-c0ffee-net1").write_text("{}")
    (results / "cnilab-other-net1").write_text("{}")
    netns.write_text("")

    def left():
        line = teardown_check("c0ffee", str(netns), [str(results), str(tmp_path / "none")])
        return subprocess.run(["sh", "-c", line], capture_output=True, text=True,
                              check=True).stdout.split()

    assert left() == [str(results / "cnilab-c0ffee-net1"), str(netns)]
    (results / "cnilab-c0ffee-net1").unlink()
    netns.unlink()
    assert left() == []


def test_teardown_wait_takes_a_slow_node_as_not_yet(k3s_lab, monkeypatch):
    """Over SSH a probe that outlives its timeout raises; the wait's deadline decides."""
    import time

    from lab.api import Attachment
    from lab.nodes.ssh import CommandTimeout

    lab, node = k3s_lab
    cluster = KubeCluster(lab, api=StandInApi([]))
    real_run, probes = node.run, []

    def slow_once(argv, **kw):
        probes.append(argv)
        if len(probes) == 1:
            raise CommandTimeout("timed out after 30s: sh -c ...")
        return real_run(argv, **kw)

    monkeypatch.setattr(node, "run", slow_once)
    monkeypatch.setattr("lab.drivers.kube_cluster.POLL", 0.01)
    gone = Attachment("c0ffee-gone", "net1", "node1", netns="/var/run/netns/cni-gone")
    cluster._wait_torn_down("node1", gone, "a", time.monotonic() + 10)
    assert len(probes) == 2
    probes.clear()
    left = Attachment("c0ffee", "net1", "node1", netns="/var/run/netns/cni-1")
    with pytest.raises(LabError, match="has not torn down pod a's sandbox"):
        cluster._wait_torn_down("node1", left, "a", time.monotonic() + 0.05)


@pytest.mark.root
def test_pod_netns_lookup_finds_the_runtime_namespace_holding_the_address():
    """probe_exec = "netns" finds a pod's namespace by its address, among the runtime's cni-*
    namespaces only (another namespace holding the same address is someone else's)."""
    import secrets
    import subprocess

    def ip(*args):
        subprocess.run(["ip", *args], check=True, capture_output=True)

    tag = secrets.token_hex(4)
    pod, decoy, other = f"cni-{tag}a", f"cni-{tag}b", f"t{tag}c"
    v4 = f"198.18.{secrets.randbelow(250) + 1}.{secrets.randbelow(150) + 100}"
    v6 = f"fd00:198:{tag[:4]}::5"
    made = []
    try:
        for name in (pod, decoy, other):
            ip("netns", "add", name)
            made.append(name)
            ip("-n", name, "link", "set", "lo", "up")
        ip("-n", pod, "addr", "add", f"{v4}/24", "dev", "lo")
        ip("-n", pod, "addr", "add", f"{v6}/64", "dev", "lo", "nodad")
        ip("-n", decoy, "addr", "add", "198.19.255.1/24", "dev", "lo")
        ip("-n", other, "addr", "add", f"{v4}/24", "dev", "lo")

        def lookup(address):
            return subprocess.run(["sh", "-c", pod_netns_lookup(address)], capture_output=True,
                                  text=True, check=False)

        assert lookup(v4).stdout.split() == [pod]
        assert lookup(v6).stdout.split() == [pod]
        # written another way, the same address (`ip` prints it canonically)
        assert lookup(v6.replace(":198:", ":0198:").upper()).stdout.split() == [pod]
        # an address the held one begins with (198.18.5.12 of 198.18.5.123) is not held
        assert lookup(v4[:-1]).returncode == 1
        ip("netns", "del", pod)
        made.remove(pod)
        gone = lookup(v4)
        assert gone.returncode == 1 and gone.stdout == ""
    finally:
        for name in made:
            subprocess.run(["ip", "netns", "del", name], check=False)


def test_netns_name_of_a_recorded_path():
    assert netns_name_of("/var/run/netns/cni-1f2e") == "cni-1f2e"
    assert netns_name_of("/run/netns/cni-1f2e") == "cni-1f2e"
    assert netns_name_of("/proc/123/ns/net") == ""   # not an `ip netns` name
    assert netns_name_of("") == ""


@pytest.mark.root
def test_probes_run_in_the_pods_netns_on_its_node_when_asked():
    """probe_exec = "netns": the probe runs through `ip netns exec` on the pod's node (here a
    stand-in node that runs commands on this host, in a namespace this test makes)."""
    import secrets
    import subprocess

    from lab.api import Attachment
    from lab.drivers.kube_cluster import KubePod

    class Host:
        def run(self, argv, timeout=30):
            self.argv = list(argv)
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                  check=False)
            return CommandResult(tuple(argv), done.returncode, done.stdout, done.stderr)

    netns, host = f"cni-t{secrets.token_hex(4)}", Host()
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        subprocess.run(["ip", "-n", netns, "addr", "add", "198.18.7.7/32", "dev", "lo"],
                       check=True)
        pod = KubePod(name="a", node="node2", ifname="eth0", ip="198.18.7.7",
                      attachment=Attachment("c0ffee", "eth0", "node2"), namespace="cnilab",
                      image="img", api=None, host=host, netns_name=netns)
        seen = pod.exec(["ip", "-o", "-4", "addr", "show", "dev", "lo"], timeout=10)
        assert seen.ok and "198.18.7.7/32" in seen.stdout, seen.stderr
        assert host.argv[:4] == ["ip", "netns", "exec", netns]
        for argv in (["no-such-probe-tool", "-s"], ["sh", "-c", "no-such-probe-tool"]):
            missing = pod.exec(argv)
            assert missing.rc == 127, (argv, missing)
            assert missing.stderr.startswith(f"{argv[0]}: not found on node node2 (probes run in "
                                             "pod a's netns there)")
        assert pod.exec(["sh", "-c", "exit 1"]).rc == 1   # a probe that fails is not "missing"
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)


def test_an_earlier_pods_events_under_the_same_name_are_not_this_pods():
    from lab.drivers.kube_cluster import own_events

    old = {"type": "Warning", "reason": "FailedCreatePodSandBox", "count": 5,
           "involvedObject": {"uid": "old-uid"}}
    new = {"type": "Normal", "reason": "Scheduled", "involvedObject": {"uid": "new-uid"}}
    pod = {"metadata": {"uid": "new-uid"}, "status": {"phase": "Pending"}}
    assert own_events([old, new], pod) == [new]
    assert pod_failure(pod, own_events([old, new], pod)) is None
    assert own_events([old], {"metadata": {}}) == [old]     # no uid yet: nothing to tell by


def test_runtime_arguments_are_refused_where_the_kubelet_is_the_runtime(k3s_lab):
    from lab.api import AttachOptions

    lab, _ = k3s_lab
    api = StandInApi([])
    cluster = KubeCluster(lab, api=api)
    for options in (AttachOptions(cni_args="IP=10.244.0.5"), AttachOptions(ifname="net2"),
                    AttachOptions(capability_args={"mac": "02:00:00:00:00:01"})):
        with pytest.raises(LabError) as info:
            cluster.create_pod("p", "node1", options)
        assert "use them on a netns or VM lab" in info.value.describe()
