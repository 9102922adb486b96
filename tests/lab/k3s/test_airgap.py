"""Where an air-gapped lab's inputs come from: the folder, the env var, explicit keys, and
what `lab up` says before any VM boots when something is missing."""
from __future__ import annotations

import stat
from pathlib import Path

import pytest

from lab.api import LabError
from lab.config import parse_config
from lab.kube import airgap
from lab.kube.pod_images import PAUSE_IMAGE_REF, POD_IMAGE_REF


def _config(tmp_path: Path, k3s: dict, multus: dict | None = None, name: str = "lab.toml"):
    plugin = tmp_path / "cnilab"
    plugin.write_text("#!/bin/sh\n")
    plugin.chmod(0o755)
    data = {"lab": {"name": "air", "provider": "existing"}, "nodes": [{"name": "n1"}],
            "plugin": {"path": str(plugin)}, "k3s": {"mode": "airgap", **k3s},
            "multus": multus or {"mode": "host"}}
    return parse_config(data, path=tmp_path / name)


def _folder(tmp_path: Path, *names: str) -> Path:
    folder = tmp_path / "air"
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"x")
    return folder


def test_the_folder_supplies_binaries_images_and_the_built_pod_images(tmp_path):
    folder = _folder(tmp_path, "k3s", "multus", "cnilab-pod.tar", "cnilab-pause.tar",
                     "k3s-airgap-images-amd64.tar.zst", "notes.txt", "cnilab-pod.tar.recipe")
    inputs = airgap.resolve_inputs(_config(tmp_path, {"airgap_dir": str(folder)}), env={})
    assert inputs.binary == folder / "k3s"
    assert inputs.multus_binary == folder / "multus"
    assert [p.name for p in inputs.images] == [
        "cnilab-pause.tar", "cnilab-pod.tar", "k3s-airgap-images-amd64.tar.zst"]
    assert (inputs.pod_image, inputs.pod_image_pull_policy) == (POD_IMAGE_REF, "Never")
    assert inputs.pause_image == PAUSE_IMAGE_REF
    assert inputs.install_script is None


def test_the_env_var_names_the_folder_when_the_config_does_not(tmp_path):
    folder = _folder(tmp_path, "k3s", "multus", "cnilab-pod.tar")
    inputs = airgap.resolve_inputs(_config(tmp_path, {}), env={airgap.ENV_VAR: str(folder)})
    assert inputs.binary == folder / "k3s"
    assert inputs.pause_image is None          # no cnilab-pause.tar: K3s's own pause image


def test_the_default_folder_is_airgap_next_to_the_config(tmp_path):
    folder = tmp_path / "airgap"
    folder.mkdir()
    for name in ("k3s", "multus", "cnilab-pod.tar"):
        (folder / name).write_bytes(b"x")
    inputs = airgap.resolve_inputs(_config(tmp_path, {}), env={})
    assert inputs.binary == folder / "k3s"


def test_explicit_keys_win_over_the_folder(tmp_path):
    folder = _folder(tmp_path, "k3s", "multus", "cnilab-pod.tar")
    own = tmp_path / "my-k3s"
    own.write_bytes(b"y")
    image = tmp_path / "netshoot.tar"
    image.write_bytes(b"z")
    config = _config(tmp_path, {"airgap_dir": str(folder), "binary": str(own),
                                "images": [str(image)], "pod_image": "docker.io/x/y:1",
                                "pod_image_pull_policy": "IfNotPresent"})
    inputs = airgap.resolve_inputs(config, env={})
    assert (inputs.binary, inputs.images) == (own, (image,))
    assert (inputs.pod_image, inputs.pod_image_pull_policy) == ("docker.io/x/y:1",
                                                                "IfNotPresent")


def test_missing_inputs_are_named_with_where_they_were_looked_for(tmp_path):
    folder = _folder(tmp_path, "cnilab-pod.tar")
    with pytest.raises(LabError) as e:
        airgap.resolve_inputs(_config(tmp_path, {}), env={airgap.ENV_VAR: str(folder)})
    assert "k3s (or k3s.binary)" in e.value.what and "multus (or multus.binary)" in e.value.what
    assert f"{folder} (${airgap.ENV_VAR})" in e.value.what
    with pytest.raises(LabError, match="no such folder"):
        airgap.resolve_inputs(_config(tmp_path, {}), env={airgap.ENV_VAR: str(tmp_path / "no")})


def test_an_airgapped_lab_without_a_pod_image_says_how_to_build_one(tmp_path):
    folder = _folder(tmp_path, "k3s", "multus")
    with pytest.raises(LabError, match="no pod image") as e:
        airgap.resolve_inputs(_config(tmp_path, {"airgap_dir": str(folder)}), env={})
    assert f"lab image pod -o {folder}" in e.value.hint


def test_connected_mode_downloads_and_uses_netshoot(tmp_path):
    config = _config(tmp_path, {"mode": "connected"}, multus={"mode": "daemonset"})
    inputs = airgap.resolve_inputs(config, env={airgap.ENV_VAR: "/nonexistent"})
    assert inputs.binary is None and inputs.images == ()
    assert inputs.pod_image == airgap.CONNECTED_POD_IMAGE


def test_pods_on_a_running_lab_need_no_airgap_folder(tmp_path, monkeypatch):
    """The scenario suite on a harness without the inputs (another checkout, a CI job that
    did not build them) still makes pods with the images `lab up` imported."""
    monkeypatch.delenv(airgap.ENV_VAR, raising=False)
    assert airgap.pod_image_of(_config(tmp_path, {})) == (POD_IMAGE_REF, "Never")
    own = _config(tmp_path, {"pod_image": "docker.io/x/y:1"})
    assert airgap.pod_image_of(own) == ("docker.io/x/y:1", "Never")
    connected = _config(tmp_path, {"mode": "connected"}, multus={"mode": "daemonset"})
    assert airgap.pod_image_of(connected) == (airgap.CONNECTED_POD_IMAGE, "IfNotPresent")


def _fake_k3s(tmp_path: Path, version: str) -> Path:
    binary = tmp_path / "k3s"
    binary.write_text(f"#!/bin/sh\necho 'k3s version {version} (5a67e8dc)'\n"
                      "echo 'go version go1.19.8'\n")
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    return binary


def test_the_binary_must_be_the_release_the_config_names(tmp_path):
    binary = _fake_k3s(tmp_path, "v1.21.2+k3s1")
    assert airgap.binary_version(binary) == "v1.21.2+k3s1"
    airgap.check_binary_version(binary, "v1.21.2+k3s1")
    with pytest.raises(LabError, match=r"is K3s v1\.21\.2\+k3s1, the config says v1\.35") as e:
        airgap.check_binary_version(binary, "v1.35.0+k3s1")
    assert 'version = "v1.21.2+k3s1"' in e.value.hint
    # a binary that cannot run here (another architecture) is not judged
    other = tmp_path / "arm64"
    other.write_bytes(b"\x7fELF not for this machine")
    other.chmod(0o755)
    assert airgap.binary_version(other) is None
    airgap.check_binary_version(other, "v1.35.0+k3s1")
