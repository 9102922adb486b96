from __future__ import annotations

import pytest
from pydantic import ValidationError

from lab.k3s.settings import K3S_DEFAULT_VERSION, K3sSettings, MultusSettings, k3s_minor


def test_defaults_pin_a_checksummed_release():
    s = K3sSettings()
    assert s.version == K3S_DEFAULT_VERSION
    assert s.expected_sha256 is not None and len(s.expected_sha256) == 64
    assert s.minor == 35


@pytest.mark.parametrize("version, minor", [("v1.21.14+k3s1", 21), ("v1.31.2+k3s1", 31),
                                            ("v1.36.0-rc1+k3s1", 36)])
def test_version_minor(version, minor):
    assert k3s_minor(version) == minor


def test_unpinned_version_needs_a_checksum():
    with pytest.raises(ValidationError, match=r"no pinned checksum.*sha256"):
        K3sSettings(version="v1.30.4+k3s1")
    s = K3sSettings(version="v1.30.4+k3s1", sha256="AB" * 32)
    assert s.expected_sha256 == "ab" * 32


@pytest.mark.parametrize("bad, message", [
    ({"version": "v1.20.15+k3s1", "sha256": "a" * 64}, "older than v1.21"),
    ({"version": "1.30"}, "not a K3s release tag"),
    ({"sha256": "xyz"}, "64 hex"),
    ({"server_args": ["--token=abc"]}, "--token is set by the harness"),
    ({"agent_args": ["--node-ip", "1.2.3.4"]}, "--node-ip is set by the harness"),
    ({"mode": "airgap"}, "needs binary"),
    ({"surprise": 1}, "Extra inputs are not permitted"),
])
def test_bad_input_says_what_to_fix(bad, message):
    with pytest.raises(ValidationError, match=message):
        K3sSettings(**bad)


def test_airgap_inputs(tmp_path):
    s = K3sSettings(mode="airgap", binary=tmp_path / "k3s", images=[tmp_path / "i.tar.zst"],
                    version="v1.22.17+k3s1")
    assert s.expected_sha256 is None  # air-gapped inputs are the user's own; no download
    assert s.local_inputs() == [tmp_path / "k3s", tmp_path / "i.tar.zst"]


def test_multus_modes(tmp_path):
    assert MultusSettings().image_ref == "ghcr.io/k8snetworkplumbingwg/multus-cni:v4.2.4-thick"
    assert MultusSettings(flavor="thin").image_ref.endswith(":v4.2.4")
    with pytest.raises(ValidationError, match="needs binary"):
        MultusSettings(mode="host")
    with pytest.raises(ValidationError, match="not a Multus release tag"):
        MultusSettings(version="latest")
    binary = tmp_path / "multus"
    binary.write_bytes(b"x")
    assert MultusSettings(mode="host", binary=binary).binary == binary
