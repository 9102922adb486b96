"""`lab image pod`: the scenario pod image and the pause image, built for real from Debian
packages (mmdebstrap) and saved by podman, then read back as a runtime would read them."""
from __future__ import annotations

import glob
import json
import os
import tarfile
from pathlib import Path

import pytest

from lab.cli import main
from lab.kube import pod_images as p


def test_command_lines_use_private_storage_and_the_recipe():
    argv = p.mmdebstrap_argv(p.POD_IMAGE, Path("/x/rootfs.tar"), "http://m/debian")
    assert argv[:4] == ["mmdebstrap", "--variant=essential", "--mode=root", "--format=tar"]
    assert "--include=iproute2,iputils-ping,iperf3,python3-minimal,procps" in argv
    assert "deb http://m/debian-security bookworm-security main" in argv
    storage = p.PodmanStorage(Path("/var/cache/x/storage"), Path("/tmp/cnilab-podman-ab"))
    imported = p.import_argv(p.PAUSE_IMAGE, storage, Path("/x/r.tar"))
    assert imported[:5] == ["podman", "--root", "/var/cache/x/storage", "--runroot",
                            "/tmp/cnilab-podman-ab"]
    assert imported[-5:] == ["import", "--change", 'ENTRYPOINT ["/usr/bin/catatonit", "-P"]',
                             "/x/r.tar", p.PAUSE_IMAGE_REF]
    assert p.save_argv(p.POD_IMAGE, storage, Path("/o.tar"))[-6:] == [
        "save", "--format", "docker-archive", "-o", "/o.tar", p.POD_IMAGE_REF]
    # a different recipe is a different build
    assert p.POD_IMAGE.recipe_key("http://a/debian") != p.POD_IMAGE.recipe_key("http://b/debian")


def _archive(path: Path) -> tuple[dict, dict, set[str]]:
    """(manifest entry, image config, files in the layers) of a docker-archive tarball."""
    with tarfile.open(path) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        config = json.load(tar.extractfile(manifest["Config"]))  # type: ignore[arg-type]
        files: set[str] = set()
        for layer in manifest["Layers"]:
            with tarfile.open(fileobj=tar.extractfile(layer)) as inner:
                files |= {m.name.lstrip("./") for m in inner.getmembers()}
    return manifest, config, files


@pytest.mark.root
@pytest.mark.slow
def test_pod_and_pause_images_are_built_from_debian_and_readable(tmp_path, capsys):
    if os.geteuid() != 0:
        pytest.skip("mmdebstrap --mode=root needs root")
    before = set(glob.glob("/tmp/cnilab-podman-*"))
    assert main(["image", "pod", "-o", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [p.POD_IMAGE_REF, str(tmp_path / p.POD_IMAGE_FILE),
                       p.PAUSE_IMAGE_REF, str(tmp_path / p.PAUSE_IMAGE_FILE)]

    manifest, config, files = _archive(tmp_path / p.POD_IMAGE_FILE)
    assert manifest["RepoTags"] == [p.POD_IMAGE_REF]
    assert config["config"]["Cmd"] == ["sleep", "infinity"]
    # everything the scenarios exec in a pod
    for needed in ("usr/bin/ip", "usr/bin/ping", "usr/bin/iperf3", "usr/bin/python3",
                   "usr/bin/sleep", "usr/bin/kill"):
        assert needed in files or needed.replace("usr/", "", 1) in files, needed
    assert not any(f.startswith("usr/share/doc/") and f != "usr/share/doc/" for f in files)

    manifest, config, files = _archive(tmp_path / p.PAUSE_IMAGE_FILE)
    assert manifest["RepoTags"] == [p.PAUSE_IMAGE_REF]
    assert config["config"]["Entrypoint"] == ["/usr/bin/catatonit", "-P"]
    assert "usr/bin/catatonit" in files
    assert (tmp_path / p.PAUSE_IMAGE_FILE).stat().st_size < 4 << 20

    # nothing of the build is left: no work dir, no podman run root
    assert sorted(x.name for x in tmp_path.iterdir()) == sorted(
        f"{i.file}{suffix}" for i in p.IMAGES for suffix in ("", ".build.log", ".recipe"))
    assert set(glob.glob("/tmp/cnilab-podman-*")) == before

    # a second run with the same recipe rebuilds nothing
    mtime = (tmp_path / p.POD_IMAGE_FILE).stat().st_mtime_ns
    assert main(["image", "pod", "-o", str(tmp_path)]) == 0
    assert (tmp_path / p.POD_IMAGE_FILE).stat().st_mtime_ns == mtime


def _multus_binaries(folder: Path, names: tuple[str, ...]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_text(f"#!/bin/sh\necho {name}\n")
        (folder / name).chmod(0o755)
    return folder


def test_the_multus_image_is_named_as_upstream_and_carries_its_binaries(tmp_path):
    bins = _multus_binaries(tmp_path / "bin", p.MULTUS_NEEDS["thick"] + (
        "passthru", "kubeconfig_generator", "cert-approver"))
    image = p.multus_image(bins, "v4.2.4", "thick")
    assert image.ref == "ghcr.io/k8snetworkplumbingwg/multus-cni:v4.2.4-thick"
    assert image.file == "cnilab-multus-v4.2.4-thick.tar"
    argv = p.mmdebstrap_argv(image, Path("/x/rootfs.tar"), "http://m/debian")
    assert '--customize-hook=mkdir -p "$1/usr/src/multus-cni/bin"' in argv
    for name in ("multus-daemon", "multus-shim", "install_multus", "passthru"):
        assert f"--customize-hook=copy-in {bins / name} /usr/src/multus-cni/bin" in argv
    # what the thick daemonset never runs stays out: every node pulls and unpacks the image
    assert not [a for a in argv if "kubeconfig_generator" in a or "cert-approver" in a]
    thin = p.multus_image(_multus_binaries(tmp_path / "thin", p.MULTUS_NEEDS["thin"]),
                          "v4.0.2", "thin")
    assert thin.ref == "ghcr.io/k8snetworkplumbingwg/multus-cni:v4.0.2"
    assert (tmp_path / "thin" / "thin_entrypoint", "/") in thin.files
    # another binary is another image
    key = image.recipe_key("http://m/debian")
    (bins / "multus-daemon").write_text("#!/bin/sh\necho rebuilt\n")
    assert p.multus_image(bins, "v4.2.4", "thick").recipe_key("http://m/debian") != key


def test_a_multus_folder_without_its_binaries_is_named_with_the_fix(tmp_path):
    bins = _multus_binaries(tmp_path / "bin", ("multus-daemon",))
    with pytest.raises(p.LabError, match="lacks the Multus thick binaries multus-shim, "
                                         "install_multus") as e:
        p.multus_image(bins, "v4.2.4", "thick")
    assert "hack/build-go.sh" in e.value.hint


@pytest.mark.root
@pytest.mark.slow
def test_lab_image_multus_builds_a_loadable_daemonset_image(tmp_path, capsys):
    if os.geteuid() != 0:
        pytest.skip("mmdebstrap --mode=root needs root")
    bins = _multus_binaries(tmp_path / "bin", p.MULTUS_NEEDS["thick"])
    out = tmp_path / "out"
    assert main(["image", "multus", "--from", str(bins), "--version", "v4.2.4",
                 "-o", str(out)]) == 0
    ref = "ghcr.io/k8snetworkplumbingwg/multus-cni:v4.2.4-thick"
    assert capsys.readouterr().out.split() == [ref, str(out / "cnilab-multus-v4.2.4-thick.tar")]
    manifest, _config, files = _archive(out / "cnilab-multus-v4.2.4-thick.tar")
    assert manifest["RepoTags"] == [ref]
    for name in p.MULTUS_NEEDS["thick"]:
        assert f"usr/src/multus-cni/bin/{name}" in files
    assert "usr/bin/cp" in files or "bin/cp" in files   # the daemonset's shell steps
