"""`lab kubeconfig` / `lab deploy` through lab.cli.main, and the shipped K3s examples."""
from __future__ import annotations

from pathlib import Path

import yaml
from test_k3s_kubeconfig import K3S_YAML

from lab.cli import main
from lab.config import load_config
from lab.kube import kubeconfig as kc
from lab.kube.actions import cluster_actions

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
    for name in ("k3s-libvirt.toml", "k3s-existing-airgap.toml", "k3s-libvirt-airgap.toml",
                 "k3s-libvirt-primary.toml", "k3s-libvirt-dualstack.toml"):
        config = load_config(ROOT / "examples" / name)
        assert config.k3s is not None
        assert config.multus is not None or config.k3s.primary
        assert next(a.name for a in cluster_actions(config)) == "install K3s server"
        if config.lab.provider == "libvirt":   # sized for K3s whatever the config leaves out
            assert config.libvirt is not None
            assert (config.libvirt.vcpus, config.libvirt.memory_mib) >= (2, 2048)


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


def test_commands_on_labs_without_k3s(tmp_path, capsys):
    path = tmp_path / "lab.toml"
    path.write_text(NETNS)
    assert main(["-c", str(path), "kubeconfig"]) == 1
    assert "no [k3s] section, so no kubeconfig" in capsys.readouterr().err
    # deploy works on every lab; one that is not up says so
    assert main(["-c", str(path), "deploy"]) == 1
    err = capsys.readouterr().err
    assert "has no nodes" in err and "lab up" in err and "Traceback" not in err


def test_nightly_workflow_takes_the_airgap_folder_through_sudo():
    """sudo drops the environment: the airgap folder must be passed on explicitly."""
    flow = yaml.safe_load((ROOT / ".github" / "workflows" / "nightly.yml").read_text())
    job = flow["jobs"]["k3s-scenarios"]
    assert "CNILAB_AIRGAP_DIR" in job["env"]
    runs = [step.get("run", "") for step in job["steps"]]
    lab_calls = [line for run in runs for line in run.splitlines()
                 if "sudo" in line and (".venv/bin/lab" in line or ".venv/bin/pytest" in line)]
    assert lab_calls and all("--preserve-env=CNILAB_AIRGAP_DIR" in line for line in lab_calls)
    down = next(s for s in job["steps"] if "lab down" in s.get("name", ""))
    assert down.get("if") == "always()"


def test_nightly_runs_k3s_on_container_nodes_and_keeps_a_vm_lab():
    flow = yaml.safe_load((ROOT / ".github" / "workflows" / "nightly.yml").read_text())
    job = flow["jobs"]["k3s-scenarios"]
    configs = job["strategy"]["matrix"]["config"]
    assert "examples/k3s-podman.toml" in configs and "vm" in configs
    assert all((ROOT / c).is_file() for c in configs if c != "vm")
    assert job["strategy"]["max-parallel"] == 1      # one lab at a time on a runner
    node_image = next(s for s in job["steps"] if "Node image" in s.get("name", ""))
    assert "podman" in node_image["if"] and "image node" in node_image["run"]
