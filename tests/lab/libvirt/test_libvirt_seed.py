"""The NoCloud seed ISO, read back with pycdlib the way cloud-init would find it."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from lab.nodes.keys import host_keys
from lab.nodes.providers.libvirt.seed import SeedSpec, read_seed_iso, seed_iso


@pytest.fixture
def spec(tmp_path) -> SeedSpec:
    keys = host_keys(tmp_path, "n1")
    return SeedSpec(hostname="n1", user="cnilab", authorized_key="ssh-ed25519 AAAAclient cnilab",
                    host_key_type="ed25519", host_private_pem=keys.private_pem,
                    host_public_line=keys.public_line, instance_prefix="cnilab-demo-n1")


def _cloud_config(data: bytes) -> dict:
    text = data.decode()
    assert text.startswith("#cloud-config\n")
    return json.loads(text.split("\n", 1)[1])   # JSON is YAML: cloud-init reads it as such


def test_iso_has_the_cidata_label_and_both_files(spec):
    label, files = read_seed_iso(seed_iso(spec))
    assert label == "cidata"
    assert set(files) == {"user-data", "meta-data"}


def test_user_data_creates_the_user_and_pins_the_host_key(spec):
    _, files = read_seed_iso(seed_iso(spec))
    config = _cloud_config(files["user-data"])
    assert config["hostname"] == "n1"
    (user,) = config["users"]
    assert user["name"] == "cnilab"
    assert user["ssh_authorized_keys"] == ["ssh-ed25519 AAAAclient cnilab"]
    assert user["sudo"] == "ALL=(ALL) NOPASSWD:ALL"
    assert "ssh_pwauth" not in config      # it would make cloud-init restart sshd late
    assert user["lock_passwd"] is True
    assert config["ssh_deletekeys"] is True
    assert config["ssh_keys"]["ed25519_private"] == spec.host_private_pem
    assert config["ssh_keys"]["ed25519_public"] == spec.host_public_line
    assert "BEGIN OPENSSH PRIVATE KEY" in config["ssh_keys"]["ed25519_private"]
    assert config["ssh_genkeytypes"] == ["ed25519"]
    assert config["locale"] == "false"   # no locales package in the built image
    # the lab user's manager stays up: no 2 s logind start on each new connection's first call
    assert ["loginctl", "enable-linger", user["name"]] in config["runcmd"]


def test_instance_id_changes_with_the_seed(spec, tmp_path):
    meta = json.loads(read_seed_iso(seed_iso(spec))[1]["meta-data"])
    assert meta["local-hostname"] == "n1"
    assert meta["instance-id"].startswith("cnilab-demo-n1-")
    other_keys = host_keys(tmp_path / "other", "n1")
    changed = SeedSpec(**{**spec.__dict__, "host_private_pem": other_keys.private_pem,
                          "host_public_line": other_keys.public_line})
    meta2 = json.loads(read_seed_iso(seed_iso(changed))[1]["meta-data"])
    assert meta2["instance-id"] != meta["instance-id"]


@pytest.mark.skipif(shutil.which("blkid") is None, reason="blkid not installed")
def test_blkid_sees_an_iso9660_cidata_volume(spec, tmp_path):
    iso = tmp_path / "seed.iso"
    iso.write_bytes(seed_iso(spec))
    out = subprocess.run(["blkid", "-o", "export", str(iso)], capture_output=True, text=True,
                         check=True).stdout
    assert "LABEL=cidata" in out and "TYPE=iso9660" in out
