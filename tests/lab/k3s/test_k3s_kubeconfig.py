from __future__ import annotations

import stat

import pytest
import yaml

from lab.api import LabError
from lab.kube import kubeconfig as kc

K3S_YAML = """apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t
    server: https://127.0.0.1:6443
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
kind: Config
preferences: {}
users:
- name: default
  user:
    client-certificate-data: Y2VydA==
    client-key-data: a2V5
"""


def test_rewrite_points_at_server_and_renames():
    doc = kc.rewrite(K3S_YAML, "10.99.0.11", "demo")
    assert doc["clusters"][0]["cluster"]["server"] == "https://10.99.0.11:6443"
    assert doc["clusters"][0]["name"] == doc["users"][0]["name"] == "cnilab-demo"
    assert doc["contexts"][0] == {"context": {"cluster": "cnilab-demo", "user": "cnilab-demo"},
                                  "name": "cnilab-demo"}
    assert doc["current-context"] == "cnilab-demo"
    assert doc["users"][0]["user"]["client-key-data"] == "a2V5"


def test_rewrite_rejects_garbage():
    with pytest.raises(LabError, match="not valid YAML"):
        kc.rewrite("a: [", "1.2.3.4", "x")
    with pytest.raises(LabError, match="expected one of each"):
        kc.rewrite("kind: Config\nclusters: []\n", "1.2.3.4", "x")


def test_write_private_is_0600(tmp_path):
    path = tmp_path / "state" / "kubeconfig"
    kc.write_private(path, "secret")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)
    kc.write_private(path, "again")  # an existing loose file is tightened too
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == "again"


def test_merge_replaces_own_entries_keeps_others(tmp_path):
    user = tmp_path / "config"
    user.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "prod",
        "clusters": [{"name": "prod", "cluster": {"server": "https://prod"}},
                     {"name": "cnilab-demo", "cluster": {"server": "https://old"}}],
        "users": [{"name": "prod", "user": {}}],
        "contexts": [{"name": "prod", "context": {"cluster": "prod", "user": "prod"}}]}))
    lab = tmp_path / "kubeconfig"
    kc.write_private(lab, kc.dump(kc.rewrite(K3S_YAML, "10.99.0.11", "demo")))
    kc.merge_into_user_config(lab, user)
    merged = yaml.safe_load(user.read_text())
    servers = {c["name"]: c["cluster"]["server"] for c in merged["clusters"]}
    assert servers == {"prod": "https://prod", "cnilab-demo": "https://10.99.0.11:6443"}
    assert merged["current-context"] == "prod"  # merging never switches the user's context
    assert [c["name"] for c in merged["contexts"]] == ["prod", "cnilab-demo"]
    assert stat.S_IMODE(user.stat().st_mode) == 0o600


def test_merge_into_missing_file(tmp_path):
    lab = tmp_path / "kubeconfig"
    kc.write_private(lab, kc.dump(kc.rewrite(K3S_YAML, "10.0.0.1", "a")))
    target = kc.merge_into_user_config(lab, tmp_path / ".kube" / "config")
    assert yaml.safe_load(target.read_text())["current-context"] == "cnilab-a"
