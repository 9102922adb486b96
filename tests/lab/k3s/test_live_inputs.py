"""The live K3s labs find the inputs of the release their example pins: a machine's air-gap
folder holds one K3s release, and a lab of another one must neither fail at `lab up`'s version
check nor run with the wrong binary."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from live_k3s import airgap_for, example_releases

EXAMPLE = "k3s-libvirt-airgap.toml"


def fake_k3s(path: Path, version: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho 'k3s version {version} (0123abcd)'\n")
    os.chmod(path, 0o755)
    return path


def an_airgap_folder(folder: Path, version: str) -> Path:
    fake_k3s(folder / "k3s", version)
    (folder / "multus").write_text("")
    return folder


def test_the_examples_release_is_read_from_it():
    k3s, multus, mode = example_releases(EXAMPLE)
    assert k3s.startswith("v1.") and "+k3s" in k3s
    assert multus and multus.startswith("v4.") and mode == "host"
    assert example_releases("k3s-libvirt-primary.toml")[1:] == (None, "host")


def test_an_airgap_folder_of_another_release_is_not_used(tmp_path, monkeypatch):
    k3s, multus, _ = example_releases(EXAMPLE)
    folder = an_airgap_folder(tmp_path / "airgap", "v1.99.0+k3s1")
    monkeypatch.setenv("CNILAB_AIRGAP_DIR", str(folder))
    monkeypatch.setenv("CNILAB_INPUTS_DIR", str(tmp_path / "inputs"))
    with pytest.raises(pytest.skip.Exception) as skipped:
        airgap_for(EXAMPLE, tmp_path / "made")
    # the skip names the release the example wants, where it looked, and why not the folder
    why = str(skipped.value)
    assert f"live K3s {k3s} needs k3s-{k3s.split('+')[0]}/k3s" in why, why
    assert f"multus-{multus}/bin/multus" in why and str(tmp_path / "inputs") in why, why
    assert f"{folder}/k3s is v1.99.0+k3s1" in why, why
    assert not (tmp_path / "made").exists()


def test_an_airgap_folder_of_the_examples_release_is_used(tmp_path, monkeypatch):
    k3s, _, _ = example_releases(EXAMPLE)
    folder = an_airgap_folder(tmp_path / "airgap", k3s)
    monkeypatch.setenv("CNILAB_AIRGAP_DIR", str(folder))
    from lab.kube import pod_images

    built: list[Path] = []
    monkeypatch.setattr(pod_images, "build_pod_images",
                        lambda where, report: built.append(where))
    assert airgap_for(EXAMPLE, tmp_path / "made") == folder
    assert built == [folder]        # the product's pod images made current there
