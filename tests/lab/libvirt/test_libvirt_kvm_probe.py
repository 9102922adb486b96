"""Choosing the accelerator: the probe boots a real kernel; the choice logic around it."""
from __future__ import annotations

import json
import shutil

import pytest

from lab.nodes.providers.libvirt import image_build, kvm_probe

needs_qemu = pytest.mark.skipif(shutil.which(kvm_probe.QEMU) is None, reason="no qemu here")


def test_config_can_force_either():
    assert kvm_probe.choose_accel("kvm", kernel=None).domain_type == "kvm"
    tcg = kvm_probe.choose_accel("tcg", kernel=None)
    assert tcg.domain_type == "qemu" and not tcg.warning


def test_without_a_probe_tcg_with_a_warning(tmp_path):
    remote = kvm_probe.choose_accel("auto", kernel=tmp_path / "k", local=False)
    assert remote.accel == "tcg" and "remote" in remote.warning
    no_kernel = kvm_probe.choose_accel("auto", kernel=None)
    assert no_kernel.accel == "tcg" and 'accel = "kvm"' in no_kernel.warning


def test_cached_answer_is_reused(tmp_path):
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"k")
    cache = tmp_path / "probe.json"
    qemu = str(tmp_path / "no-such-qemu")   # would fail loudly if the probe ran
    key = kvm_probe._cache_key(kernel, qemu)
    cache.write_text(json.dumps({"key": key, "result": {
        "kvm_works": True, "detail": "stored", "seconds": 1.0}}))
    assert kvm_probe.cached_probe(kernel, cache_file=cache, qemu=qemu).detail == "stored"
    kernel.write_bytes(b"another kernel")           # a new kernel: probed again
    again = kvm_probe.cached_probe(kernel, cache_file=cache, qemu=qemu)
    assert not again.kvm_works
    assert json.loads(cache.read_text())["result"]["detail"] == again.detail


@needs_qemu
def test_something_that_is_not_a_kernel_does_not_count_as_working_kvm(tmp_path):
    bogus = tmp_path / "vmlinuz"
    bogus.write_bytes(b"not a kernel" * 100)
    result = kvm_probe.probe_kvm(bogus, timeout=15)
    assert not result.kvm_works
    assert result.detail


@needs_qemu
@pytest.mark.slow
def test_the_probe_recognises_a_kernel_that_booted():
    built = image_build.find_built()
    if built is None:
        pytest.skip("no built image (lab image build) to take a kernel from")
    # TCG always works: it is the positive case of the same probe.
    result = kvm_probe.probe_kvm(built.kernel, timeout=120, accel="tcg")
    assert result.kvm_works, result.detail
    assert "TCG" in result.detail
