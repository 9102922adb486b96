from __future__ import annotations

import pytest
from pydantic import ValidationError

from lab.config.k3s import (
    K3S_DEFAULT_VERSION,
    K3sSettings,
    MultusSettings,
    k3s_minor,
    runtime_max_cni_version,
)


def test_defaults_pin_a_checksummed_release():
    s = K3sSettings()
    assert s.version == K3S_DEFAULT_VERSION
    assert s.expected_sha256 is not None and len(s.expected_sha256) == 64
    assert s.minor == 35


@pytest.mark.parametrize("version, minor", [("v1.21.14+k3s1", 21), ("v1.31.2+k3s1", 31),
                                            ("v1.36.0-rc1+k3s1", 36),
                                            # source builds of untagged commits (version.sh)
                                            ("v1.28.4+k3s-71a3c35f-dirty", 28),
                                            ("v1.29.0+k3s-0123abcd", 29)])
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
    ({"version": "v1.28.4+k3s-71a3c35", "mode": "airgap"}, "not a K3s release tag"),
    ({"sha256": "xyz"}, "64 hex"),
    ({"server_args": ["--token=abc"]}, "--token is set by the harness"),
    ({"agent_args": ["--node-ip", "1.2.3.4"]}, "--node-ip is set by the harness"),
    ({"surprise": 1}, "Extra inputs are not permitted"),
])
def test_bad_input_says_what_to_fix(bad, message):
    with pytest.raises(ValidationError, match=message):
        K3sSettings(**bad)


def test_airgap_needs_no_checksum():
    s = K3sSettings(mode="airgap", version="v1.22.17+k3s1")
    assert s.expected_sha256 is None  # air-gapped inputs are the user's own; no download


def test_cni_versions_the_runtimes_accept():
    assert runtime_max_cni_version(21) == "0.4.0"     # containerd 1.4/1.5: libcni 0.8
    assert runtime_max_cni_version(23) == "0.4.0"
    assert runtime_max_cni_version(24) == "1.0.0"
    assert MultusSettings(version="v4.0.2").max_cni_version == "1.0.0"   # libcni 1.1.2
    assert MultusSettings(version="v4.1.0").max_cni_version == "1.1.0"   # libcni 1.2
    assert MultusSettings(version="v5.0.0").max_cni_version == "1.1.0"


def test_multus_modes(tmp_path):
    assert MultusSettings().image_ref == "ghcr.io/k8snetworkplumbingwg/multus-cni:v4.2.4-thick"
    assert MultusSettings(flavor="thin").image_ref.endswith(":v4.2.4")
    assert MultusSettings(mode="host").binary is None   # the airgap folder may hold it
    with pytest.raises(ValidationError, match="not a Multus release tag"):
        MultusSettings(version="latest")
    binary = tmp_path / "multus"
    binary.write_bytes(b"x")
    assert MultusSettings(mode="host", binary=binary).binary == binary


def test_waits_the_user_did_not_size_stretch_on_emulated_nodes():
    from lab.config.k3s import EMULATED_WAIT_FACTOR, MultusSettings, sized_for

    default = MultusSettings()
    assert sized_for(default, emulated=False).ready_timeout == default.ready_timeout
    assert sized_for(default, emulated=True).ready_timeout == \
        default.ready_timeout * EMULATED_WAIT_FACTOR
    chosen = MultusSettings(ready_timeout=42)
    assert sized_for(chosen, emulated=True).ready_timeout == 42   # the user's word stands
