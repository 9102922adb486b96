"""The K3s actions driven against real local nodes (see conftest: overlay mount namespaces), as
far as this machine allows: K3s cannot be downloaded and systemd is not PID 1 here, so the
install actions are expected to stop at `systemctl`, and kubectl answers come from a stand-in
/usr/local/bin/k3s script. Everything before that boundary ran for real."""
from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest

from lab.api import ActionContext, LabError
from lab.config import parse_config
from lab.kube import (
    actions,
    cmdlines,
    deploy,
    k3s_install,
    multus,
    multus_install,
    paths,
    remote,
    unpack_images,
)
from lab.kube.k3s_install import InstallK3sAgents, InstallK3sServer, WaitNodesReady, not_ready
from lab.nodes.ssh import CommandTimeout
from plugin import netconf

pytestmark = pytest.mark.root

NEW_CONTAINERD = """version = 3
[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dir = "/var/lib/rancher/k3s/data/cni"
  conf_dir = "/var/lib/rancher/k3s/agent/etc/cni/net.d"
"""

# Stands in for the k3s binary where the actions need kubectl answers: node list from a file,
# `apply` recorded, everything else succeeds.
FAKE_K3S = """#!/bin/sh
[ "$1" = kubectl ] || exit 1
shift
case "$*" in
  apply*) cat >> /var/lib/rancher/applied.jsonl; echo >> /var/lib/rancher/applied.jsonl ;;
  "get nodes"*) cat /var/lib/rancher/nodes.json ;;
  *"get secret"*) cat /var/lib/rancher/secret.json ;;
  *"get crd/"*) echo True ;;
  *"get daemonset/"*) cat /var/lib/rancher/ds.json ;;
  *"get pods"*) cat /var/lib/rancher/pods.json ;;
esac
exit 0
"""


def _config(tmp_path: Path, **k3s):
    plugin = tmp_path / "cnilab"
    plugin.write_text("#!/bin/sh\necho plugin\n")
    plugin.chmod(0o755)
    data = {"lab": {"name": "k3stest", "provider": "existing", "state_dir": str(tmp_path / "st")},
            "nodes": [{"name": "node1", "role": "server"}, {"name": "node2"}, {"name": "node3"}],
            "plugin": {"path": str(plugin), "type": "cnilab", "backend": "vxlan"},
            # hermetic: the airgap folder is the test's own, the pod image and the lab
            # interface are named (the overlay nodes' netns is empty)
            "k3s": {"airgap_dir": str(tmp_path), "pod_image": "registry.local/pod:1",
                    "flannel_iface": "eth1", **k3s},
            "multus": {"flavor": "thick"}}
    return parse_config(data)


def _nodes(make_node):
    return [make_node("node1", "10.99.0.11"), make_node("node2", "10.99.0.12"),
            make_node("node3", "10.99.0.13")]


def _ctx(config, nodes, tmp_path):
    state = tmp_path / "st"
    state.mkdir(exist_ok=True)
    return ActionContext(config=config, nodes=nodes, state_dir=state)


def _airgap_inputs(tmp_path):
    binary = tmp_path / "k3s-bin"
    binary.write_bytes(b"pretend this is the k3s release binary\n")
    images = tmp_path / "k3s-airgap-images-amd64.tar.zst"
    images.write_bytes(b"pretend images" * 1000)
    return binary, images


def test_action_order(tmp_path):
    names = [a.name for a in actions.cluster_actions(_config(tmp_path))]
    assert names == ["install K3s server", "install K3s agents", "wait for every node to be Ready",
                     "fetch the kubeconfig", "install Multus",
                     "deploy the plugin and its NetworkAttachmentDefinition"]
    primary = [a.name for a in actions.cluster_actions(_config(tmp_path, primary=True))]
    assert primary.index("deploy the plugin as the cluster network") < primary.index(
        "wait for every node to be Ready")


def test_airgap_server_install_runs_up_to_systemd(tmp_path, make_node):
    binary, images = _airgap_inputs(tmp_path)
    config = _config(tmp_path, mode="airgap", binary=str(binary), images=[str(images)],
                     server_args=["--disable=traefik"])
    nodes = _nodes(make_node)
    ctx = _ctx(config, nodes, tmp_path)
    with pytest.raises(LabError, match="cannot start K3s server") as e:
        InstallK3sServer(poll=0.1).run(ctx)
    assert e.value.where == "node1"
    server = nodes[0]
    # binary and images placed byte for byte where K3s expects them
    assert server.file("/usr/local/bin/k3s").read_bytes() == binary.read_bytes()
    assert stat.S_IMODE(server.file("/usr/local/bin/k3s").stat().st_mode) == 0o755
    placed = server.file(f"{cmdlines.IMAGES_DIR}/{images.name}")
    assert placed.read_bytes() == images.read_bytes()
    # the token: 0600 on both sides, same secret, never in the unit
    local_token = tmp_path / "st" / "k3s-token"
    node_token = server.file(cmdlines.NODE_TOKEN_PATH)
    assert stat.S_IMODE(local_token.stat().st_mode) == 0o600
    assert stat.S_IMODE(node_token.stat().st_mode) == 0o600
    assert node_token.read_text() == local_token.read_text() and len(local_token.read_text()) > 32
    unit = server.file("/etc/systemd/system/k3s.service").read_text()
    assert ("ExecStart=/usr/local/bin/k3s server --node-name node1 --node-ip 10.99.0.11 "
            "--token-file /etc/rancher/k3s/cnilab-token --flannel-iface eth1 "
            "--tls-san 10.99.0.11 "
            "--write-kubeconfig-mode 0600 --disable=traefik\n") in unit
    assert local_token.read_text().strip() not in unit
    assert "cnilab-token" not in str(e.value.output)  # the failure is systemd's, not ours
    # agents were not touched by the server action
    assert not nodes[1].file("/usr/local/bin/k3s").exists()


def test_rerun_copies_nothing_twice(tmp_path, make_node):
    binary, images = _airgap_inputs(tmp_path)
    config = _config(tmp_path, mode="airgap", binary=str(binary), images=[str(images)])
    node = make_node("node1", "10.99.0.11")
    ctx = _ctx(config, [node], tmp_path)
    k3s_install.install_k3s_files(ctx, node)
    copies = []
    real_put = node.put_file
    node.put_file = lambda local, remote, mode=0o755: (copies.append(remote),
                                                       real_put(local, remote, mode))
    k3s_install.install_k3s_files(ctx, node)
    assert copies == [cmdlines.NODE_TOKEN_PATH]  # only the small token; no binary, no images
    binary.write_bytes(b"a newer k3s\n")
    k3s_install.install_k3s_files(ctx, node)
    assert cmdlines.K3S_BIN in copies


def _connected_node(tmp_path, make_node, **k3s):
    """A connected lab's node that already holds the pinned binary (nothing is downloaded)."""
    content = b"already installed k3s\n"
    config = _config(tmp_path, version="v1.30.4+k3s1",
                     sha256=hashlib.sha256(content).hexdigest(), **k3s)
    node = make_node("node1", "10.99.0.11")
    target = node.file(cmdlines.K3S_BIN)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content)
    k3s_install.install_k3s_files(_ctx(config, [node], tmp_path), node)
    return node, content


def test_connected_install_keeps_a_verified_binary(tmp_path, make_node):
    """A binary already matching the pinned checksum is kept: no download is attempted."""
    node, content = _connected_node(tmp_path, make_node)
    assert node.file(cmdlines.K3S_BIN).read_bytes() == content


def test_a_registry_mirror_reaches_every_node_as_registries_yaml(tmp_path, make_node):
    """Connected labs behind a mirror: K3s on each node reads registries.yaml naming the
    mirror for every registry the lab's images come from (pod, Multus, K3s's own)."""
    import json

    node, _ = _connected_node(tmp_path, make_node, registry_mirror="http://10.99.0.1:5000")
    mirrors = json.loads(node.file(cmdlines.REGISTRIES_PATH).read_text())["mirrors"]
    assert mirrors == {r: {"endpoint": ["http://10.99.0.1:5000"]}
                       for r in ("docker.io", "ghcr.io", "registry.local")}


def test_agents_join_in_parallel_and_failures_name_nodes(tmp_path, make_node):
    binary, _ = _airgap_inputs(tmp_path)
    config = _config(tmp_path, mode="airgap", binary=str(binary), agent_args=["--node-label=x=y"])
    nodes = _nodes(make_node)
    with pytest.raises(LabError, match="2 nodes failed: node2, node3"):
        InstallK3sAgents().run(_ctx(config, nodes, tmp_path))
    for agent in nodes[1:]:
        unit = agent.file("/etc/systemd/system/k3s-agent.service").read_text()
        assert (f"ExecStart=/usr/local/bin/k3s agent --server https://10.99.0.11:6443 "
                f"--node-name {agent.name} --node-ip {agent.address} --token-file "
                "/etc/rancher/k3s/cnilab-token --flannel-iface eth1 --node-label=x=y\n") in unit
    assert not nodes[0].file("/etc/systemd/system/k3s-agent.service").exists()


def _node_item(name, ready, reason="KubeletReady", message=""):
    return {"metadata": {"name": name}, "status": {"conditions": [
        {"type": "Ready", "status": "True" if ready else "False", "reason": reason,
         "message": message}]}}


def test_not_ready_explains_each_node():
    doc = json.dumps({"items": [_node_item("node1", True),
                                _node_item("node2", False, "KubeletNotReady",
                                           "container runtime network not ready")]})
    assert not_ready(doc, ["node1", "node2", "node3"]) == {
        "node2": "KubeletNotReady: container runtime network not ready",
        "node3": "not registered with the server"}
    assert not_ready(doc, ["node1"]) == {}
    assert not_ready("", ["node1"]) == {"node1": "kubectl returned no node list"}


def _put(node, path, text, mode=0o644):
    f = node.file(path)
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(text)
    f.chmod(mode)


READY_DS = {"metadata": {"generation": 1},
            "status": {"observedGeneration": 1, "desiredNumberScheduled": 3, "numberReady": 3,
                       "updatedNumberScheduled": 3}}


def _with_fake_k3s(node, nodes_doc=None, ds=None, pods=None):
    _put(node, cmdlines.K3S_BIN, FAKE_K3S, 0o755)
    _put(node, "/var/lib/rancher/nodes.json", json.dumps(nodes_doc or {"items": []}))
    _put(node, "/var/lib/rancher/ds.json", json.dumps(ds or READY_DS))
    _put(node, "/var/lib/rancher/pods.json", json.dumps(pods or {"items": []}))


def test_wait_ready_timeout_names_the_node(tmp_path, make_node):
    config = _config(tmp_path, ready_timeout=0.5)
    nodes = _nodes(make_node)
    _with_fake_k3s(nodes[0], {"items": [_node_item("node1", True), _node_item("node3", True),
                                        _node_item("node2", False, "KubeletNotReady", "cni")]})
    with pytest.raises(LabError, match=r"node\(s\) node2 not Ready") as e:
        WaitNodesReady(poll=0.1).run(_ctx(config, nodes, tmp_path))
    assert e.value.where == "node2" and "journalctl -u k3s-agent" in e.value.hint


def test_wait_ready_passes_when_all_ready(tmp_path, make_node):
    nodes = _nodes(make_node)
    _with_fake_k3s(nodes[0], {"items": [_node_item(n.name, True) for n in nodes]})
    WaitNodesReady(poll=0.1).run(_ctx(_config(tmp_path, ready_timeout=5), nodes, tmp_path))


class _SlowProbes:
    """A server node whose first `kubectl get nodes` (or every one) outlives its timeout, as
    over SSH on a starved TCG server (the CI failure of 2026-12-01)."""

    def __init__(self, node, always=False):
        self._node = node
        self.always = always
        self.timeouts = 0

    def __getattr__(self, name):
        return getattr(self._node, name)

    def run(self, argv, **kw):
        if list(argv) == cmdlines.nodes_json() and (self.always or not self.timeouts):
            self.timeouts += 1
            raise CommandTimeout(f"timed out after {kw.get('timeout')}s: k3s kubectl get nodes")
        return self._node.run(argv, **kw)


def test_wait_ready_takes_a_slow_probe_as_not_yet(tmp_path, make_node):
    nodes = _nodes(make_node)
    _with_fake_k3s(nodes[0], {"items": [_node_item(n.name, True) for n in nodes]})
    slow = _SlowProbes(nodes[0])
    WaitNodesReady(poll=0.1).run(_ctx(_config(tmp_path, ready_timeout=5), [slow, *nodes[1:]],
                                      tmp_path))
    assert slow.timeouts == 1


def test_wait_ready_deadline_names_the_slow_probe(tmp_path, make_node):
    nodes = _nodes(make_node)
    _with_fake_k3s(nodes[0], {"items": [_node_item(n.name, True) for n in nodes]})
    slow = _SlowProbes(nodes[0], always=True)
    with pytest.raises(LabError, match=r"node\(s\) node1 not Ready after 0s") as e:
        WaitNodesReady(poll=0.1).run(_ctx(_config(tmp_path, ready_timeout=0.3),
                                          [slow, *nodes[1:]], tmp_path))
    assert e.value.where == "node1" and "the API did not answer: timed out" in e.value.output


def _with_containerd_config(node, text=NEW_CONTAINERD):
    path = node.file("/var/lib/rancher/k3s/agent/etc/containerd/config.toml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_deploy_copies_plugin_and_applies_the_nad(tmp_path, make_node):
    config = _config(tmp_path)
    nodes = _nodes(make_node)
    for node in nodes:
        _with_containerd_config(node)
    _with_fake_k3s(nodes[0])
    spec = deploy.deploy_plugin(config, nodes, poll=0.1)
    assert spec.ifname == "net1" and spec.cni_path == "/var/lib/rancher/k3s/data/cni"
    for node in nodes:
        placed = node.file("/var/lib/rancher/k3s/data/cni/cnilab")
        assert placed.read_bytes() == config.plugin_path.read_bytes()
    applied = [json.loads(line) for line in
               nodes[0].file("/var/lib/rancher/applied.jsonl").read_text().splitlines() if line]
    kinds = [item["kind"] for item in applied[-1]["items"]]
    assert kinds == ["Namespace", "NetworkAttachmentDefinition"]
    conf = netconf.parse(json.loads(applied[-1]["items"][1]["spec"]["config"]))
    assert [(n.name, str(n.ip), str(n.pod_subnet)) for n in conf.nodes] == [
        ("node1", "10.99.0.11", "10.244.0.0/24"), ("node2", "10.99.0.12", "10.244.1.0/24"),
        ("node3", "10.99.0.13", "10.244.2.0/24")]


def test_deploy_primary_writes_each_nodes_conflist(tmp_path, make_node):
    config = _config(tmp_path, primary=True, cni_bin_dir="/opt/cni/bin",
                     cni_conf_dir="/etc/cni/net.d")
    nodes = _nodes(make_node)   # no containerd config needed: both dirs overridden
    spec = deploy.deploy_plugin(config, nodes, poll=0.1)
    assert spec.ifname == "eth0"
    for node in nodes:
        conflist = json.loads(node.file("/etc/cni/net.d/05-k3stest.conflist").read_text())
        assert conflist["name"] == "k3stest" and conflist["plugins"][0]["type"] == "cnilab"
        assert node.file("/opt/cni/bin/cnilab").exists()


def test_deploy_without_containerd_config_says_what_to_do(tmp_path, make_node):
    config = _config(tmp_path, ready_timeout=0.3)
    node = make_node("node1", "10.99.0.11")
    with pytest.raises(LabError, match="cannot tell where K3s keeps CNI plugins") as e:
        deploy.deploy_plugin(config, [node], poll=0.1)
    assert e.value.where == "node1" and "k3s.cni_bin_dir" in e.value.hint


def test_rerun_adopts_the_running_servers_token(tmp_path, make_node):
    """A lost harness token is read back from the server instead of minting one agents would
    be refused with."""
    config = _config(tmp_path)
    server = make_node("node1", "10.99.0.11")
    token = server.file(cmdlines.NODE_TOKEN_PATH)
    token.parent.mkdir(parents=True)
    token.write_text("K10existing::server:secret\n")
    ctx = _ctx(config, [server], tmp_path)
    k3s_install.adopt_server_token(ctx, server)
    local = tmp_path / "st" / "k3s-token"
    assert local.read_text() == "K10existing::server:secret\n"
    assert stat.S_IMODE(local.stat().st_mode) == 0o600


def test_remove_k3s_cleans_what_install_left(tmp_path, make_node):
    binary, images = _airgap_inputs(tmp_path)
    config = _config(tmp_path, mode="airgap", binary=str(binary), images=[str(images)])
    node = make_node("node1", "10.99.0.11")
    k3s_install.install_k3s_files(_ctx(config, [node], tmp_path), node)
    assert node.file(cmdlines.K3S_BIN).exists()
    k3s_install.remove_k3s([node])
    assert not node.file(cmdlines.K3S_BIN).exists()
    assert not node.file(cmdlines.NODE_TOKEN_PATH).exists()
    assert not node.file(f"{cmdlines.IMAGES_DIR}/{images.name}").exists()


FLANNEL_CONFLIST = {"name": "cbr0", "cniVersion": "1.0.0", "plugins": [
    {"type": "flannel", "delegate": {"hairpinMode": True, "isDefaultGateway": True}},
    {"type": "portmap", "capabilities": {"portMappings": True}}]}


def _multus_host_lab(tmp_path, make_node, ready_timeout):
    """Two nodes with flannel's conflist, a stand-in k3s and its service-account secret, and a
    config for Multus in host mode."""
    import base64

    multus_bin = tmp_path / "multus"
    multus_bin.write_bytes(b"pretend thin multus\n")
    config = _config(tmp_path)
    config = config.model_copy(update={"multus": type(config.multus)(
        mode="host", binary=multus_bin, ready_timeout=ready_timeout)})
    nodes = _nodes(make_node)[:2]
    _with_fake_k3s(nodes[0])
    nodes[0].file("/var/lib/rancher/secret.json").write_text(json.dumps({"data": {
        "token": base64.b64encode(b"sa-token-value").decode(), "ca.crt": "Q0FDRVJU"}}))
    for node in nodes:
        _with_containerd_config(node)
        conf = node.file("/var/lib/rancher/k3s/agent/etc/cni/net.d/10-flannel.conflist")
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(json.dumps(FLANNEL_CONFLIST))
    return config, nodes


def test_multus_host_mode_writes_what_the_thin_entrypoint_would(tmp_path, make_node):
    import yaml
    config, nodes = _multus_host_lab(tmp_path, make_node, ready_timeout=3)
    multus_install.InstallMultus(poll=0.1).run(_ctx(config, nodes, tmp_path))
    applied = json.loads(nodes[0].file("/var/lib/rancher/applied.jsonl").read_text().split("\n")[0])
    kinds = [item["kind"] for item in applied["items"]]
    assert kinds == ["CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding",
                     "ServiceAccount", "Secret"]
    net_d = "/var/lib/rancher/k3s/agent/etc/cni/net.d"
    for node in nodes:
        assert node.file("/var/lib/rancher/k3s/data/cni/multus").read_bytes() == \
            (tmp_path / "multus").read_bytes()
        kube = node.file(f"{net_d}/multus.d/multus.kubeconfig")
        assert stat.S_IMODE(kube.stat().st_mode) == 0o600
        doc = yaml.safe_load(kube.read_text())
        assert doc["users"][0]["user"]["token"] == "sa-token-value"
        assert doc["clusters"][0]["cluster"]["server"] == "https://10.99.0.11:6443"
        multus_conf = json.loads(node.file(f"{net_d}/00-multus.conf").read_text())
        assert multus_conf["delegates"] == [FLANNEL_CONFLIST]
        assert multus_conf["kubeconfig"] == f"{net_d}/multus.d/multus.kubeconfig"


def test_multus_host_mode_waits_for_the_cluster_network(tmp_path, make_node):
    multus_bin = tmp_path / "multus"
    multus_bin.write_bytes(b"m")
    config = _config(tmp_path)
    config = config.model_copy(update={"multus": type(config.multus)(
        mode="host", binary=multus_bin, ready_timeout=0.5)})
    node = make_node("node1", "10.99.0.11")
    _with_fake_k3s(node)
    node.file("/var/lib/rancher/secret.json").write_text(
        json.dumps({"data": {"token": "dG9r", "ca.crt": "Q0E="}}))
    _with_containerd_config(node)
    with pytest.raises(LabError, match="no cluster network config in") as e:
        multus_install.InstallMultus(poll=0.1).run(_ctx(config, [node], tmp_path))
    assert e.value.where == "node1"


OLD_CONTAINERD = """version = 2
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/var/lib/rancher/k3s/data/current/bin"
  conf_dir = "/var/lib/rancher/k3s/agent/etc/cni/net.d"
"""


def test_multus_daemonset_applies_k3s_paths_read_on_the_nodes(tmp_path, make_node):
    config = _config(tmp_path)
    nodes = _nodes(make_node)
    _with_fake_k3s(nodes[0])
    for node in nodes:
        _with_containerd_config(node, OLD_CONTAINERD)
    multus_install.InstallMultus(poll=0.1).run(_ctx(config, nodes, tmp_path))
    applied = json.loads(nodes[0].file("/var/lib/rancher/applied.jsonl").read_text().split("\n")[0])
    ds = next(i for i in applied["items"] if i["kind"] == "DaemonSet")
    paths = {v["name"]: v.get("hostPath", {}).get("path")
             for v in ds["spec"]["template"]["spec"]["volumes"]}
    assert paths["cnibin"] == "/var/lib/rancher/k3s/data/current/bin"
    assert paths["cni"] == "/var/lib/rancher/k3s/agent/etc/cni/net.d"


def test_an_unready_multus_daemonset_is_reported_per_node_at_the_deadline(tmp_path, make_node):
    """Polled to the deadline (a starved server's watch would end early), then each Multus
    pod's node and why its container waits."""
    config = _config(tmp_path)
    config = config.model_copy(update={"multus": config.multus.model_copy(
        update={"ready_timeout": 0.5})})
    nodes = _nodes(make_node)
    unready = {"metadata": {"generation": 1},
               "status": {"observedGeneration": 1, "desiredNumberScheduled": 3,
                          "numberReady": 2, "updatedNumberScheduled": 3}}
    pods = {"items": [
        {"spec": {"nodeName": "node1"}, "status": {"phase": "Running"}},
        {"spec": {"nodeName": "node3"}, "status": {"phase": "Pending", "containerStatuses": [
            {"name": "kube-multus", "state": {"waiting": {
                "reason": "ImagePullBackOff",
                "message": "Back-off pulling image \"multus:v4.2.4-thick\""}}}]}}]}
    _with_fake_k3s(nodes[0], ds=unready, pods=pods)
    for node in nodes:
        _with_containerd_config(node, OLD_CONTAINERD)
    with pytest.raises(LabError, match=r"not ready within 0s: 2 of 3 Multus pods ready") as e:
        multus_install.InstallMultus(poll=0.1).run(_ctx(config, nodes, tmp_path))
    assert "node3: Pending; kube-multus: ImagePullBackOff (Back-off pulling image" in e.value.output
    assert "node1: Running" in e.value.output


class _PodListingTimesOut(_SlowProbes):
    def run(self, argv, **kw):
        if "pods" in argv:
            raise CommandTimeout(f"timed out after {kw.get('timeout')}s: k3s kubectl get pods")
        return self._node.run(argv, **kw)


def test_an_unready_daemonset_is_reported_even_when_its_pods_cannot_be_listed(tmp_path,
                                                                              make_node):
    config = _config(tmp_path)
    config = config.model_copy(update={"multus": config.multus.model_copy(
        update={"ready_timeout": 0.3})})
    nodes = _nodes(make_node)
    _with_fake_k3s(nodes[0], ds={"status": {}})
    for node in nodes:
        _with_containerd_config(node, OLD_CONTAINERD)
    with pytest.raises(LabError, match="no Multus pod scheduled yet") as e:
        multus_install.InstallMultus(poll=0.1).run(
            _ctx(config, [_PodListingTimesOut(nodes[0]), *nodes[1:]], tmp_path))
    assert "the Multus pods could not be listed: timed out after 60s" in e.value.output


def test_multus_daemonset_readiness_follows_generation_and_counts():
    ds = json.loads(json.dumps(READY_DS))
    assert multus.daemonset_unready(ds) is None
    ds["metadata"]["generation"] = 2
    assert "not seen the new spec" in multus.daemonset_unready(ds)
    ds["status"]["observedGeneration"] = 2
    ds["status"]["updatedNumberScheduled"] = 1
    assert multus.daemonset_unready(ds) == "3 of 3 Multus pods ready (1 updated)"
    assert multus.daemonset_unready({"status": {}}) == "no Multus pod scheduled yet"


def test_multus_refuses_nodes_that_disagree(tmp_path, make_node):
    config = _config(tmp_path)
    nodes = _nodes(make_node)[:2]
    _with_fake_k3s(nodes[0])
    _with_containerd_config(nodes[0], OLD_CONTAINERD)
    _with_containerd_config(nodes[1], NEW_CONTAINERD)
    with pytest.raises(LabError, match="nodes disagree on the CNI directories") as e:
        multus_install.InstallMultus(poll=0.1).run(_ctx(config, nodes, tmp_path))
    assert "node1: bin /var/lib/rancher/k3s/data/current/bin" in e.value.output
    assert "node2: bin /var/lib/rancher/k3s/data/cni" in e.value.output


def _with_restarting_unit(node, restarts: int) -> None:
    """systemctl and journalctl stand-ins (systemd is not PID 1 here): the unit has been
    restarted `restarts` times and its journal ends with the crash."""
    for name, body in (
            ("systemctl", f'case "$*" in *NRestarts*) echo {restarts};; esac\n'),
            ("journalctl", 'echo "level=fatal msg=\\"failed to wait for apiserver being '
                           'healthy\\""\n')):
        tool = node.file(f"/usr/local/bin/{name}")
        tool.parent.mkdir(parents=True, exist_ok=True)
        tool.write_text(f"#!/bin/sh\n{body}")
        tool.chmod(0o755)


def test_a_crash_looping_server_is_reported_at_once_with_its_journal(tmp_path, make_node,
                                                                      monkeypatch):
    """Waiting on a unit systemd keeps restarting is waiting forever: the API wait stops at
    the second restart and shows why (seen: 1 vCPU under TCG)."""
    import time

    binary, _ = _airgap_inputs(tmp_path)
    binary.write_text("#!/bin/sh\nexit 1\n")         # as kubectl: the API never answers
    config = _config(tmp_path, mode="airgap", binary=str(binary), ready_timeout=120)
    node = make_node("node1", "10.99.0.11")
    ctx = _ctx(config, [node], tmp_path)
    _with_restarting_unit(node, 3)
    started = time.monotonic()
    monkeypatch.setattr(k3s_install, "start_k3s", lambda *_a, **_k: None)  # no systemd here
    with pytest.raises(LabError, match=r"K3s server keeps restarting \(3 restarts\)") as e:
        InstallK3sServer(poll=0.1).run(ctx)
    assert time.monotonic() - started < 30, "it waited instead of reporting"
    assert "failed to wait for apiserver being healthy" in e.value.output
    assert "2 vCPUs" in e.value.hint
    _with_restarting_unit(node, 1)            # one restart is not a pattern yet
    assert k3s_install.crash_loop(node, "server") is None


def test_a_config_k3s_never_wrote_because_it_crashes_is_reported_as_the_crash(make_node,
                                                                            monkeypatch):
    """Container nodes whose root cannot lower oom_score_adj wait for the containerd config
    K3s renders; a K3s that crash-loops renders none, and the crash is what to show (seen: a
    K3s build whose server panicked at start, reported as a config never written)."""
    from lab.kube import containerd_oom

    node = make_node("node1", "10.99.0.11")

    def never_rendered(*_args):
        raise LabError("cannot add restrict_oom_score_adj to containerd's config: "
                       "K3s wrote none within 180 s")

    monkeypatch.setattr(containerd_oom, "after_start", never_rendered)
    _with_restarting_unit(node, 5)
    with pytest.raises(LabError, match=r"K3s server keeps restarting \(5 restarts\)") as e:
        k3s_install.pin_oom_setting(node, "server", 28, True)
    assert "failed to wait for apiserver being healthy" in e.value.output
    _with_restarting_unit(node, 0)      # not crashing: the config's own error stands
    with pytest.raises(LabError, match="K3s wrote none within 180 s"):
        k3s_install.pin_oom_setting(node, "server", 28, True)


def test_a_redeploy_sends_a_delta_and_one_session_per_node(tmp_path, make_node, monkeypatch):
    """The inner loop: after the first deploy the harness keeps the copy it put on the nodes
    and the CNI dirs it found; a changed plugin then goes as an xdelta3 delta (a few KiB, not
    1.3 MB) in one session per node, and lands byte for byte."""
    import shutil

    if shutil.which("xdelta3") is None:
        pytest.skip("xdelta3 is not installed (scripts/setup.sh installs it)")
    config = _config(tmp_path)
    nodes = _nodes(make_node)[:2]
    for node in nodes:
        _with_containerd_config(node)
    _with_fake_k3s(nodes[0])
    plugin = config.plugin_path
    import os

    plugin.write_bytes(b"#!/bin/sh\n" + os.urandom(1 << 20))   # 1 MiB that gzip cannot shrink
    deploy.deploy_plugin(config, nodes, poll=0.1)
    plugin.write_bytes(plugin.read_bytes()[:5000] + b"# an edit\n" + plugin.read_bytes()[5000:])
    calls = []
    real_sh = remote.sh
    monkeypatch.setattr(deploy, "sh", lambda node, script, **kw: (
        calls.append((node.name, len(kw.get("input") or b""))), real_sh(node, script, **kw))[1])
    deploy.deploy_plugin(config, nodes, poll=0.1)
    for node in nodes:
        placed = node.file("/var/lib/rancher/k3s/data/cni/cnilab")
        assert placed.read_bytes() == plugin.read_bytes()
        sent = [size for name, size in calls if name == node.name]
        assert len(sent) == 1 and sent[0] < 2000, sent      # one session, a delta's bytes
    # a node whose copy is not the delta's base still gets the whole plugin
    nodes[1].file("/var/lib/rancher/k3s/data/cni/cnilab").write_bytes(b"someone else's")
    plugin.write_bytes(plugin.read_bytes() + b"# another edit\n")
    calls.clear()
    deploy.deploy_plugin(config, nodes, poll=0.1)
    assert nodes[1].file("/var/lib/rancher/k3s/data/cni/cnilab").read_bytes() == \
        plugin.read_bytes()
    assert max(size for name, size in calls if name == "node2") > 10_000
    # nothing changed: one session per node, the plugin there left alone
    calls.clear()
    reports: list[str] = []
    deploy.deploy_plugin(config, nodes, reports.append, poll=0.1)
    assert "0 replaced" in reports[0], reports
    assert sorted(name for name, _ in calls) == ["node1", "node2"], calls


def test_wait_probes_a_slow_node_less_often():
    """A probe that takes long is CPU the node waited for needs: at most a third of the time."""
    import time

    calls = []

    def slow_check():
        calls.append(time.monotonic())
        time.sleep(0.2)
        return "not yet"

    with pytest.raises(LabError, match="gave up"):
        remote.wait_until(slow_check, 1.5, lambda why: LabError(f"gave up: {why}"), poll=0.01)
    assert 2 <= len(calls) <= 4, calls          # every ~0.6 s, not every 0.21 s
    assert calls[-1] - calls[0] <= 1.6            # the last probe at the deadline, not after


def test_multus_waits_for_the_crd_until_its_deadline_and_says_so(tmp_path, make_node):
    """Polled: a CRD not yet established (or an API that answers Timeout) is a 'not yet'."""
    config, nodes = _multus_host_lab(tmp_path, make_node, ready_timeout=1)
    nodes[0].file(cmdlines.K3S_BIN).write_text(FAKE_K3S.replace(
        '*"get crd/"*) echo True ;;',
        '*"get crd/"*) echo "Error from server (Timeout)" >&2; exit 1 ;;'))
    with pytest.raises(LabError, match="the NAD CRD is not established after 1s") as e:
        multus_install.InstallMultus(poll=0.1).run(_ctx(config, nodes, tmp_path))
    assert "Timeout" in e.value.output


# Stands in for `k3s ctr`: the images a node holds are lines of /var/lib/rancher/images.txt;
# each mount/unmount is recorded.
FAKE_CTR = """#!/bin/sh
[ "$1" = ctr ] || exit 1
echo "$*" >> /var/lib/rancher/ctr.log
if [ "$5" = mount ] && ! grep -qxF "$8" /var/lib/rancher/images.txt; then
  echo "ctr: image \\"$8\\": not found" >&2; exit 1
fi
exit 0
"""

SNAPSHOTTER_CONFIG = """[plugins.cri.containerd]
  snapshotter = "native"
"""


def _with_fake_ctr(node, images):
    _put(node, cmdlines.K3S_BIN, FAKE_CTR, 0o755)
    _put(node, "/var/lib/rancher/images.txt", "".join(f"{i}\n" for i in images))
    _put(node, paths.CONTAINERD_CONFIG, SNAPSHOTTER_CONFIG)


def test_airgapped_pod_images_are_unpacked_on_every_node_ahead(tmp_path, make_node):
    from lab.kube.pod_images import PAUSE_IMAGE_FILE, PAUSE_IMAGE_REF

    binary, _ = _airgap_inputs(tmp_path)
    (tmp_path / PAUSE_IMAGE_FILE).write_bytes(b"pause")   # found in the folder: the sandbox
    config = _config(tmp_path, mode="airgap", binary=str(binary))
    assert "unpack the pod images on every node" in [
        a.name for a in actions.cluster_actions(config)]
    assert "unpack the pod images on every node" not in [
        a.name for a in actions.cluster_actions(_config(tmp_path))]   # connected: pulls unpack
    nodes = _nodes(make_node)
    for node in nodes:
        _with_fake_ctr(node, [PAUSE_IMAGE_REF, "registry.local/pod:1"])
    unpack_images.UnpackPodImages().run(_ctx(config, nodes, tmp_path))
    for node in nodes:
        calls = node.file("/var/lib/rancher/ctr.log").read_text().splitlines()
        assert [c.split()[4:8] for c in calls] == [
            ["mount", "--snapshotter", "native", PAUSE_IMAGE_REF],
            ["unmount", "--snapshotter", "native", "--rm"],
            ["mount", "--snapshotter", "native", "registry.local/pod:1"],
            ["unmount", "--snapshotter", "native", "--rm"]]
    # a pod image the nodes may pull (a registry mirror) is left to the first pull; one that
    # can never be pulled is an error now, not a pod that will not start later
    _with_fake_ctr(nodes[1], [PAUSE_IMAGE_REF])
    said = []
    pulls = _config(tmp_path, mode="airgap", binary=str(binary),
                    pod_image_pull_policy="IfNotPresent")
    ctx = _ctx(pulls, nodes, tmp_path)
    ctx.report = said.append
    unpack_images.UnpackPodImages().run(ctx)
    assert said == [f"{PAUSE_IMAGE_REF} unpacked on 3 nodes; registry.local/pod:1 not imported: "
                    "pulled at first use"]
    with pytest.raises(LabError, match=r"image registry\.local/pod:1 is not on node2") as e:
        unpack_images.UnpackPodImages().run(_ctx(config, nodes, tmp_path))   # air-gapped: Never
    assert "not found" in e.value.output and "lab image pod" in e.value.hint


def test_an_image_k3s_is_still_importing_is_waited_for_to_the_deadline(tmp_path, make_node):
    """K3s imports its air-gap tarballs beside the kubelet's start: under TCG the 140 MB pod
    image came in well after the nodes were Ready (seen on 3 VMs, 2026-12-07)."""
    import threading

    binary, _ = _airgap_inputs(tmp_path)
    nodes = _nodes(make_node)
    for node in nodes:
        _with_fake_ctr(node, [])
        _put(node, f"{cmdlines.IMAGES_DIR}/cnilab-pod.tar", "a tarball K3s is importing")
    arrives = threading.Timer(0.6, lambda: nodes[2].file("/var/lib/rancher/images.txt")
                              .write_text("registry.local/pod:1\n"))
    for node in nodes[:2]:
        _put(node, "/var/lib/rancher/images.txt", "registry.local/pod:1\n")
    arrives.start()
    try:
        unpack_images.UnpackPodImages(poll=0.1).run(
            _ctx(_config(tmp_path, mode="airgap", binary=str(binary), ready_timeout=20),
                 nodes, tmp_path))
    finally:
        arrives.cancel()
    calls = nodes[2].file("/var/lib/rancher/ctr.log").read_text().splitlines()
    assert [c.split()[4] for c in calls][-2:] == ["mount", "unmount"], calls
    assert len(calls) >= 3, calls   # at least one "not found" before it came
    # never imported: the deadline, saying what it waited for
    _with_fake_ctr(nodes[1], [])
    with pytest.raises(LabError, match=r"image registry\.local/pod:1 is not on node2: K3s had "
                                       r"not imported it from .* after 1s") as e:
        unpack_images.UnpackPodImages(poll=0.1).run(
            _ctx(_config(tmp_path, mode="airgap", binary=str(binary), ready_timeout=1),
                 nodes, tmp_path))
    assert "not imported yet" in e.value.output and "not found" in e.value.output


def test_snapshotter_is_read_from_each_config_format():
    from lab.kube.paths import parse_snapshotter

    assert parse_snapshotter(SNAPSHOTTER_CONFIG) == "native"
    assert parse_snapshotter('version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\n'
                             'snapshotter = "fuse-overlayfs"\n') == "fuse-overlayfs"
    assert parse_snapshotter("version = 3\n[plugins.'io.containerd.cri.v1.images']\n"
                             "snapshotter = 'stargz'\n") == "stargz"
    assert parse_snapshotter(NEW_CONTAINERD) == "overlayfs"   # none named: containerd's default
    assert parse_snapshotter("not toml [") == "overlayfs"


class _ApiServer:
    """A server node whose kubectl answers from a script: busy, timed out, then as given."""

    name = "node1"

    def __init__(self, answers):
        self.answers, self.calls = list(answers), []

    def run(self, argv, input=None, timeout=None):
        from lab.api import CommandResult

        self.calls.append(list(argv))
        answer = self.answers.pop(0)
        if answer == "timeout":
            raise CommandTimeout("kubectl apply", where=self.name)
        rc, err = answer
        return CommandResult(tuple(argv), rc, "", err)


def test_apply_waits_out_a_busy_api_server_without_fetching_the_openapi_schema():
    server = _ApiServer([(1, 'error validating "STDIN": ... context deadline exceeded'),
                         "timeout", (1, "dial tcp 127.0.0.1:6443: connect: connection refused"),
                         (0, "")])
    remote.apply(server, [{"kind": "ConfigMap"}], "Multus", poll=0)
    assert len(server.calls) == 4
    assert all("--validate=false" in call for call in server.calls), server.calls


def test_apply_of_a_rejected_manifest_fails_at_once_and_a_busy_one_at_its_deadline():
    server = _ApiServer([(1, 'The DaemonSet "x" is invalid: spec.template: Required value')])
    with pytest.raises(LabError, match="cannot apply Multus") as e:
        remote.apply(server, [{"kind": "DaemonSet"}], "Multus", poll=0)
    assert len(server.calls) == 1 and "is invalid" in e.value.output
    busy = _ApiServer([(1, "TLS handshake timeout")] * 50)
    with pytest.raises(LabError, match="cannot apply NAD") as e:
        remote.apply(busy, [], "NAD", deadline_s=0.05, poll=0.01)
    assert "stayed busy" in e.value.hint
