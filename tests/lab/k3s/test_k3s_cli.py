"""`lab kubeconfig` / `lab deploy` through lab.cli.main, and the shipped K3s examples."""
from __future__ import annotations

from pathlib import Path

import yaml
from test_k3s_kubeconfig import K3S_YAML

from lab.cli import main
from lab.config import load_config
from lab.k3s import kubeconfig as kc
from lab.k3s.actions import cluster_actions

ROOT = Path(__file__).resolve().parents[3]
NETNS = """[lab]
name = "plain"
[[nodes]]
name = "node1"
[plugin]
path = "/bin/true"
"""


def _k3s_config(tmp_path: Path) -> Path:
    text = (ROOT / "examples" / "k3s-existing-airgap.toml").read_text()
    text = text.replace('name = "nightly"', f'name = "nightly"\nstate_dir = "{tmp_path}/st"')
    path = tmp_path / "lab.toml"
    path.write_text(text)
    return path


def test_examples_parse_and_plan():
    for name in ("k3s-libvirt.toml", "k3s-existing-airgap.toml"):
        config = load_config(ROOT / "examples" / name)
        assert config.k3s is not None and config.multus is not None
        assert next(a.name for a in cluster_actions(config)) == "install K3s server"


def test_kubeconfig_prints_path_and_merges(tmp_path, capsys, monkeypatch):
    config_path = _k3s_config(tmp_path)
    state = tmp_path / "st"
    kc.write_private(kc.state_path(state), kc.dump(kc.rewrite(K3S_YAML, "192.0.2.11",
                                                              "nightly")))
    user = tmp_path / "home-kube-config"
    monkeypatch.setenv("KUBECONFIG", str(user))
    assert main(["-c", str(config_path), "kubeconfig", "--merge"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == str(kc.state_path(state))
    assert "cnilab-nightly" in out[0]
    merged = yaml.safe_load(user.read_text())
    assert merged["clusters"][0]["cluster"]["server"] == "https://192.0.2.11:6443"


def test_commands_refuse_labs_without_k3s(tmp_path, capsys):
    path = tmp_path / "lab.toml"
    path.write_text(NETNS)
    assert main(["-c", str(path), "kubeconfig"]) == 1
    assert "no [k3s] section, so no kubeconfig" in capsys.readouterr().err
    assert main(["-c", str(path), "deploy"]) == 1
    err = capsys.readouterr().err
    assert "no [k3s] section" in err and "Traceback" not in err
