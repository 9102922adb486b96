"""The image recipe and its cache key (the build itself runs in the vm test and the bench)."""
from __future__ import annotations

import os

import pytest

from lab.nodes import debian_build
from lab.nodes.providers.libvirt import image_build


def test_mmdebstrap_command_line(tmp_path):
    argv = image_build.mmdebstrap_argv(tmp_path / "root", "http://deb.debian.org/debian")
    assert argv[:2] == ["mmdebstrap", "--variant=minbase"]
    include = next(a for a in argv if a.startswith("--include="))
    for pkg in ("linux-image-cloud-amd64", "systemd-sysv", "openssh-server", "cloud-init",
                "python3", "iproute2", "containernetworking-plugins"):
        assert pkg in include.split("=", 1)[1].split(",")
    assert "bookworm" in argv and str(tmp_path / "root") in argv
    assert "deb http://deb.debian.org/debian-security bookworm-security main" in argv
    hooks = [a for a in argv if a.startswith("--customize-hook=")]
    assert any("ssh_host_" in h and "rm -f" in h for h in hooks)   # no shared host keys
    assert any("systemd-networkd" in h for h in hooks)


def test_recipe_key_is_stable_and_follows_the_mirror():
    assert image_build.recipe_key("http://a/debian") == image_build.recipe_key("http://a/debian")
    assert image_build.recipe_key("http://a/debian") != image_build.recipe_key("http://b/debian")


def test_mirror_comes_from_apt_sources(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example.org/debian\nSuites: bookworm\n")
    (tmp_path / "sources.list.d" / "other.sources").write_text(
        "Types: deb\nURIs: https://deb.nodesource.com/node_20.x\n")
    assert debian_build.apt_mirror(tmp_path) == "http://mirror.example.org/debian"
    (tmp_path / "sources.list").write_text("deb http://one-line.example/debian bookworm main\n")
    assert debian_build.apt_mirror(tmp_path) == "http://one-line.example/debian"
    assert debian_build.apt_mirror(tmp_path / "none") == debian_build.DEFAULT_MIRROR


def test_incomplete_builds_are_not_found(tmp_path):
    built = image_build.image_for(tmp_path, "http://m/debian")
    built.directory.mkdir()
    built.disk.write_bytes(b"x")
    assert image_build.find_built(tmp_path) is None
    for f in (built.kernel, built.initrd, built.manifest):
        f.write_text("{}")
    assert image_build.find_built(tmp_path) == built


@pytest.mark.skipif(os.geteuid() != 0, reason="build_image needs root")
def test_a_cached_build_is_not_rebuilt(tmp_path):
    built = image_build.image_for(tmp_path, "http://m/debian")
    built.directory.mkdir()
    for f in (built.disk, built.kernel, built.initrd, built.manifest):
        f.write_text("{}")
    lines: list[str] = []
    image, seconds = image_build.build_image(tmp_path, mirror="http://m/debian",
                                             report=lines.append)
    assert image == built and seconds is None
    assert lines == [f"image cached: {built.directory}"]
