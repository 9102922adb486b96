"""`lab image list|path` through the real CLI entry point (`lab image build` runs in the vm
test: it takes minutes)."""
from __future__ import annotations

from lab.cli import main
from lab.nodes.providers.libvirt import image_build


def test_list_on_an_empty_cache(tmp_path, capsys):
    assert main(["image", "--cache", str(tmp_path), "list"]) == 0
    assert "lab image build" in capsys.readouterr().err


def test_path_of_a_built_image(tmp_path, capsys):
    built = image_build.image_for(tmp_path, "http://m/debian")
    built.directory.mkdir()
    for f in (built.disk, built.kernel, built.initrd, built.manifest):
        f.write_text("{}")
    assert main(["-c", str(tmp_path / "no-config.toml"), "image", "--cache", str(tmp_path),
                 "path"]) == 0     # no config file: the default image
    assert capsys.readouterr().out.strip() == str(built.disk)
    assert main(["image", "--cache", str(tmp_path), "list"]) == 0
    assert built.directory.name in capsys.readouterr().out


def test_path_of_a_catalog_image_not_downloaded(tmp_path, capsys):
    assert main(["image", "--cache", str(tmp_path), "path", "ubuntu-24.04"]) == 1
    err = capsys.readouterr().err
    assert "not downloaded yet" in err and "--fetch" in err


def test_path_of_a_missing_built_image(tmp_path, capsys):
    assert main(["image", "--cache", str(tmp_path), "path", "cnilab-debian-12"]) == 1
    assert "lab image build" in capsys.readouterr().err
