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
from lab.k3s import actions, commands
from lab.k3s.actions import InstallK3sAgents, InstallK3sServer, WaitNodesReady, not_ready
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
            "k3s": k3s, "multus": {"flavor": "thick"}}
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
    placed = server.file(f"{commands.IMAGES_DIR}/{images.name}")
    assert placed.read_bytes() == images.read_bytes()
    # the token: 0600 on both sides, same secret, never in the unit
    local_token = tmp_path / "st" / "k3s-token"
    node_token = server.file(commands.NODE_TOKEN_PATH)
    assert stat.S_IMODE(local_token.stat().st_mode) == 0o600
    assert stat.S_IMODE(node_token.stat().st_mode) == 0o600
    assert node_token.read_text() == local_token.read_text() and len(local_token.read_text()) > 32
    unit = server.file("/etc/systemd/system/k3s.service").read_text()
    assert ("ExecStart=/usr/local/bin/k3s server --node-name node1 --node-ip 10.99.0.11 "
            "--token-file /etc/rancher/k3s/cnilab-token --tls-san 10.99.0.11 "
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
    actions.install_k3s_files(ctx, node)
    copies = []
    real_put = node.put_file
    node.put_file = lambda local, remote, mode=0o755: (copies.append(remote),
                                                       real_put(local, remote, mode))
    actions.install_k3s_files(ctx, node)
    assert copies == [commands.NODE_TOKEN_PATH]  # only the small token; no binary, no images
    binary.write_bytes(b"a newer k3s\n")
    actions.install_k3s_files(ctx, node)
    assert commands.K3S_BIN in copies


def test_connected_install_keeps_a_verified_binary(tmp_path, make_node):
    """A binary already matching the pinned checksum is kept: no download is attempted."""
    content = b"already installed k3s\n"
    config = _config(tmp_path, version="v1.30.4+k3s1",
                     sha256=hashlib.sha256(content).hexdigest())
    node = make_node("node1", "10.99.0.11")
    target = node.file(commands.K3S_BIN)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content)
    actions.install_k3s_files(_ctx(config, [node], tmp_path), node)
    assert target.read_bytes() == content


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
                "/etc/rancher/k3s/cnilab-token --node-label=x=y\n") in unit
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


def _with_fake_k3s(node, nodes_doc=None):
    k3s = node.file(commands.K3S_BIN)
    k3s.parent.mkdir(parents=True, exist_ok=True)
    k3s.write_text(FAKE_K3S)
    k3s.chmod(0o755)
    rancher = node.file("/var/lib/rancher/nodes.json")
    rancher.parent.mkdir(parents=True, exist_ok=True)
    rancher.write_text(json.dumps(nodes_doc or {"items": []}))


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
    spec = actions.deploy_plugin(config, nodes, poll=0.1)
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
    spec = actions.deploy_plugin(config, nodes, poll=0.1)
    assert spec.ifname == "eth0"
    for node in nodes:
        conflist = json.loads(node.file("/etc/cni/net.d/05-k3stest.conflist").read_text())
        assert conflist["name"] == "k3stest" and conflist["plugins"][0]["type"] == "cnilab"
        assert node.file("/opt/cni/bin/cnilab").exists()


def test_deploy_without_containerd_config_says_what_to_do(tmp_path, make_node):
    config = _config(tmp_path, ready_timeout=0.3)
    node = make_node("node1", "10.99.0.11")
    with pytest.raises(LabError, match="cannot tell where K3s keeps CNI plugins") as e:
        actions.deploy_plugin(config, [node], poll=0.1)
    assert e.value.where == "node1" and "k3s.cni_bin_dir" in e.value.hint


def test_rerun_adopts_the_running_servers_token(tmp_path, make_node):
    """A lost harness token is read back from the server instead of minting one agents would
    be refused with."""
    config = _config(tmp_path)
    server = make_node("node1", "10.99.0.11")
    token = server.file(commands.NODE_TOKEN_PATH)
    token.parent.mkdir(parents=True)
    token.write_text("K10existing::server:secret\n")
    ctx = _ctx(config, [server], tmp_path)
    actions.adopt_server_token(ctx, server)
    local = tmp_path / "st" / "k3s-token"
    assert local.read_text() == "K10existing::server:secret\n"
    assert stat.S_IMODE(local.stat().st_mode) == 0o600


def test_remove_k3s_cleans_what_install_left(tmp_path, make_node):
    binary, images = _airgap_inputs(tmp_path)
    config = _config(tmp_path, mode="airgap", binary=str(binary), images=[str(images)])
    node = make_node("node1", "10.99.0.11")
    actions.install_k3s_files(_ctx(config, [node], tmp_path), node)
    assert node.file(commands.K3S_BIN).exists()
    actions.remove_k3s([node])
    assert not node.file(commands.K3S_BIN).exists()
    assert not node.file(commands.NODE_TOKEN_PATH).exists()
    assert not node.file(f"{commands.IMAGES_DIR}/{images.name}").exists()


FLANNEL_CONFLIST = {"name": "cbr0", "cniVersion": "1.0.0", "plugins": [
    {"type": "flannel", "delegate": {"hairpinMode": True, "isDefaultGateway": True}},
    {"type": "portmap", "capabilities": {"portMappings": True}}]}


def test_multus_host_mode_writes_what_the_thin_entrypoint_would(tmp_path, make_node):
    import base64

    import yaml
    multus_bin = tmp_path / "multus"
    multus_bin.write_bytes(b"pretend thin multus\n")
    config = _config(tmp_path)
    config = config.model_copy(update={"multus": type(config.multus)(
        mode="host", binary=multus_bin, ready_timeout=3)})
    nodes = _nodes(make_node)[:2]
    _with_fake_k3s(nodes[0])
    nodes[0].file("/var/lib/rancher/secret.json").write_text(json.dumps({"data": {
        "token": base64.b64encode(b"sa-token-value").decode(), "ca.crt": "Q0FDRVJU"}}))
    for node in nodes:
        _with_containerd_config(node)
        conf = node.file("/var/lib/rancher/k3s/agent/etc/cni/net.d/10-flannel.conflist")
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(json.dumps(FLANNEL_CONFLIST))
    actions.InstallMultus(poll=0.1).run(_ctx(config, nodes, tmp_path))
    applied = json.loads(nodes[0].file("/var/lib/rancher/applied.jsonl").read_text().split("\n")[0])
    kinds = [item["kind"] for item in applied["items"]]
    assert kinds == ["CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding",
                     "ServiceAccount", "Secret"]
    net_d = "/var/lib/rancher/k3s/agent/etc/cni/net.d"
    for node in nodes:
        assert node.file("/var/lib/rancher/k3s/data/cni/multus").read_bytes() == \
            multus_bin.read_bytes()
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
        actions.InstallMultus(poll=0.1).run(_ctx(config, [node], tmp_path))
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
    actions.InstallMultus(poll=0.1).run(_ctx(config, nodes, tmp_path))
    applied = json.loads(nodes[0].file("/var/lib/rancher/applied.jsonl").read_text().split("\n")[0])
    ds = next(i for i in applied["items"] if i["kind"] == "DaemonSet")
    paths = {v["name"]: v.get("hostPath", {}).get("path")
             for v in ds["spec"]["template"]["spec"]["volumes"]}
    assert paths["cnibin"] == "/var/lib/rancher/k3s/data/current/bin"
    assert paths["cni"] == "/var/lib/rancher/k3s/agent/etc/cni/net.d"


def test_multus_refuses_nodes_that_disagree(tmp_path, make_node):
    config = _config(tmp_path)
    nodes = _nodes(make_node)[:2]
    _with_fake_k3s(nodes[0])
    _with_containerd_config(nodes[0], OLD_CONTAINERD)
    _with_containerd_config(nodes[1], NEW_CONTAINERD)
    with pytest.raises(LabError, match="nodes disagree on the CNI directories") as e:
        actions.InstallMultus(poll=0.1).run(_ctx(config, nodes, tmp_path))
    assert "node1: bin /var/lib/rancher/k3s/data/current/bin" in e.value.output
    assert "node2: bin /var/lib/rancher/k3s/data/cni" in e.value.output
