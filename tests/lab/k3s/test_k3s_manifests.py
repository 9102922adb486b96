"""Rendered manifests validated offline: kubernetes-validate for built-in kinds (strict, at the
target Kubernetes version), the CRD's own schema for the NetworkAttachmentDefinition, and the
plugin's own config parser for what the NAD carries."""
from __future__ import annotations

import json

import jsonschema
import kubernetes_validate
import pytest

from lab.api import LabError, NetworkSpec
from lab.config.k3s import K3S_DEFAULT_VERSION, MultusSettings, k3s_minor
from lab.kube import multus, nad
from lab.kube.paths import CniDirs
from plugin import netconf

OLD_DIRS = CniDirs(("/var/lib/rancher/k3s/data/current/bin",),
                   "/var/lib/rancher/k3s/agent/etc/cni/net.d")
NEW_DIRS = CniDirs(("/var/lib/rancher/k3s/data/cni",), "/var/lib/rancher/k3s/agent/etc/cni/net.d")
OLDEST_SCHEMA = "1.25.0"   # kubernetes-validate's oldest; v1.21-1.24 use no newer API fields
TARGET = f"1.{k3s_minor(K3S_DEFAULT_VERSION)}.0"


def _validate(doc, version):
    kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("version", [OLDEST_SCHEMA, TARGET])
@pytest.mark.parametrize("flavor", ["thick", "thin"])
@pytest.mark.parametrize("dirs", [OLD_DIRS, NEW_DIRS], ids=["old-k3s", "new-k3s"])
def test_daemonset_manifests_validate(version, flavor, dirs):
    docs = multus.cluster_manifests(MultusSettings(flavor=flavor), dirs)
    assert [d["kind"] for d in docs[:4]] == ["CustomResourceDefinition", "ClusterRole",
                                             "ClusterRoleBinding", "ServiceAccount"]
    for doc in docs:
        _validate(doc, version)


def test_host_mode_manifests_validate(tmp_path):
    binary = tmp_path / "multus"
    binary.write_bytes(b"x")
    docs = multus.cluster_manifests(MultusSettings(mode="host", binary=binary), NEW_DIRS)
    assert docs[-1]["type"] == "kubernetes.io/service-account-token"
    assert not [d for d in docs if d["kind"] == "DaemonSet"]
    for doc in docs:
        _validate(doc, TARGET)


def test_validation_catches_a_broken_manifest():
    """The validator is not a rubber stamp: a wrong field type is refused."""
    ds = multus.thin_daemonset(MultusSettings(flavor="thin"), NEW_DIRS)[0]
    ds["spec"]["template"]["spec"]["hostNetwork"] = "yes"
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(ds, TARGET)


def _mounts(ds):
    pod = ds["spec"]["template"]["spec"]
    volumes = {v["name"]: v.get("hostPath", {}).get("path") for v in pod["volumes"]}
    return pod, volumes


@pytest.mark.parametrize("dirs", [OLD_DIRS, NEW_DIRS])
def test_thick_uses_k3s_paths_same_inside_and_out(dirs):
    config_map, ds = multus.thick_daemonset(MultusSettings(), dirs)
    pod, volumes = _mounts(ds)
    assert volumes["cni"] == dirs.conf_dir and volumes["cnibin"] == dirs.bin_dir
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["cnibin"] == dirs.bin_dir   # delegates run chrooted: paths must match
    daemon = json.loads(config_map["data"]["daemon-config.json"])
    assert daemon["binDir"] == dirs.bin_dir and daemon["chrootDir"] == "/hostroot"
    assert pod["containers"][0]["image"].endswith("multus-cni:v4.2.4-thick")
    assert "/opt/cni/bin" not in json.dumps(volumes) and "/etc/cni/net.d" not in volumes.values()


def test_thin_writes_host_paths():
    (ds,) = multus.thin_daemonset(MultusSettings(flavor="thin"), NEW_DIRS)
    pod, volumes = _mounts(ds)
    args = pod["containers"][0]["args"]
    assert ("--multus-kubeconfig-file-host=/var/lib/rancher/k3s/agent/etc/cni/net.d/"
            "multus.d/multus.kubeconfig") in args
    assert "--additional-bin-dir=/var/lib/rancher/k3s/data/cni" in args
    assert volumes == {"cni": NEW_DIRS.conf_dir, "cnibin": NEW_DIRS.bin_dir}


# --- host mode files --------------------------------------------------------------------------

FLANNEL = {"name": "cbr0", "cniVersion": "1.0.0", "plugins": [
    {"type": "flannel", "delegate": {"hairpinMode": True, "forceAddress": True,
                                     "isDefaultGateway": True}},
    {"type": "portmap", "capabilities": {"portMappings": True}},
    {"type": "bandwidth", "capabilities": {"bandwidth": True}}]}


def test_pick_master_like_libcni():
    assert multus.pick_master_config(
        ["00-multus.conf", "multus.d", "10-flannel.conflist", "20-x.conf"]) == \
        "10-flannel.conflist"
    assert multus.pick_master_config(["00-multus.conf", "README"]) is None


def test_host_config_delegates_to_cluster_network():
    conf = multus.host_config(FLANNEL, NEW_DIRS)
    assert conf["type"] == "multus" and conf["cniVersion"] == "1.0.0"
    assert conf["capabilities"] == {"portMappings": True, "bandwidth": True}
    assert conf["delegates"] == [FLANNEL]
    assert conf["kubeconfig"] == (
        "/var/lib/rancher/k3s/agent/etc/cni/net.d/multus.d/multus.kubeconfig")
    assert conf["binDir"] == "/var/lib/rancher/k3s/data/cni"


def test_host_kubeconfig_is_a_kubeconfig():
    import yaml
    text = multus.host_kubeconfig("https://10.99.0.11:6443", "Q0E=", "tok.en")
    doc = yaml.safe_load(text)
    assert doc["users"][0]["user"]["token"] == "tok.en"
    assert doc["clusters"][0]["cluster"] == {"server": "https://10.99.0.11:6443",
                                             "certificate-authority-data": "Q0E="}
    with pytest.raises(ValueError, match="no token"):
        multus.host_kubeconfig("https://x", "Q0E=", "")


# --- NAD from the lab's network ---------------------------------------------------------------

def _cnilab_config(node: str) -> dict:
    return {"cniVersion": "1.1.0", "name": "cnilab", "type": "cnilab", "backend": "vxlan",
            "mtu": 1500, "nodeName": node, "ipam": {"type": "host-local"},
            "nodes": [{"name": "node1", "ip": "10.99.0.11", "podSubnet": "10.244.1.0/24"},
                      {"name": "node2", "ip": "10.99.0.12", "podSubnet": "10.244.2.0/24"}]}


def _spec(configs, ifname="net1"):
    return NetworkSpec(name="cnilab", plugin_type="cnilab", ifname=ifname,
                       cni_path="/var/lib/rancher/k3s/data/cni", configs=configs)


SPEC = _spec({"node1": _cnilab_config("node1"), "node2": _cnilab_config("node2")})


def test_nad_round_trips_through_the_plugin_parser():
    doc = nad.nad_manifest(SPEC, "cnilab")
    schema = multus.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    jsonschema.validate(doc, schema)
    parsed = netconf.parse(json.loads(doc["spec"]["config"]))
    assert [(n.name, str(n.ip), str(n.pod_subnet)) for n in parsed.nodes] == [
        ("node1", "10.99.0.11", "10.244.1.0/24"), ("node2", "10.99.0.12", "10.244.2.0/24")]
    assert parsed.backend == "vxlan" and parsed.node_name is None
    assert doc["metadata"] == {"name": "cnilab", "namespace": "cnilab",
                               "labels": {"app.kubernetes.io/managed-by": "cnilab"}}


def test_nad_refuses_per_node_configs():
    ptp = {n: {"cniVersion": "1.0.0", "name": "cnilab", "type": "ptp",
               "ipam": {"type": "host-local", "subnet": sub}}
           for n, sub in (("node1", "10.244.1.0/24"), ("node2", "10.244.2.0/24"))}
    with pytest.raises(LabError, match="differs between node1 and node2 \\(ipam\\)") as e:
        nad.nad_manifest(_spec(ptp), "cnilab")
    assert "k3s.primary" in str(e.value)


def test_nad_name_must_be_dns1123():
    bad = NetworkSpec(name="Cni_Lab", plugin_type="cnilab", ifname="net1", cni_path="",
                      configs=SPEC.configs)
    with pytest.raises(LabError, match="cannot name a NetworkAttachmentDefinition"):
        nad.nad_manifest(bad, "cnilab")


def test_primary_conflist_round_trip():
    conflist = nad.primary_conflist(_cnilab_config("node1"))
    assert conflist["cniVersion"] == "1.1.0" and conflist["name"] == "cnilab"
    plugin = dict(conflist["plugins"][0], cniVersion=conflist["cniVersion"],
                  name=conflist["name"])
    assert netconf.parse(plugin).node_name == "node1"
    assert nad.primary_conflist_name(SPEC) == "05-cnilab.conflist"


def test_networks_annotation_and_status():
    assert json.loads(nad.networks_annotation(SPEC, "cnilab")) == [
        {"name": "cnilab", "namespace": "cnilab", "interface": "net1"}]
    status = json.dumps([
        {"name": "cbr0", "interface": "eth0", "ips": ["10.42.1.5"], "default": True},
        {"name": "cnilab/cnilab", "interface": "net1", "ips": ["fd00::5", "10.244.2.7"]}])
    assert nad.attachment_ip(status, SPEC, "cnilab") == "10.244.2.7"
    assert nad.attachment_ip(None, SPEC, "cnilab") is None
    assert nad.attachment_ip(json.dumps([{"name": "other/x", "interface": "net1",
                                          "ips": ["1.2.3.4"]}]), SPEC, "cnilab") is None
    with pytest.raises(LabError, match="not JSON"):
        nad.attachment_ip("{", SPEC, "cnilab")


def test_thick_multus_sees_where_k3s_cni_symlinks_point():
    """K3s from October 2024 on: data/cni holds symlinks into data/<hash>/bin; the daemon
    finds a delegate in its own mounts before running it chrooted, so it mounts data/ too
    (live on K3s v1.35 without it: `failed to find plugin "flannel"` for every pod)."""
    from lab.config.k3s import MultusSettings
    from lab.kube import multus
    from lab.kube.paths import CniDirs

    new = CniDirs(("/var/lib/rancher/k3s/data/cni",), "/var/lib/rancher/k3s/agent/etc/cni/net.d")
    _config_map, ds = multus.thick_daemonset(MultusSettings(), new)
    spec = ds["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in spec["containers"][0]["volumeMounts"]}
    assert mounts["k3s-data"]["mountPath"] == "/var/lib/rancher/k3s/data"
    assert mounts["k3s-data"]["readOnly"] is True
    assert {"name": "k3s-data", "hostPath": {"path": "/var/lib/rancher/k3s/data"}} in \
        spec["volumes"]
    old = CniDirs(("/var/lib/rancher/k3s/data/current/bin",),
                  "/var/lib/rancher/k3s/agent/etc/cni/net.d")
    _config_map, ds = multus.thick_daemonset(MultusSettings(), old)
    names = {v["name"] for v in ds["spec"]["template"]["spec"]["volumes"]}
    assert "k3s-data" not in names
