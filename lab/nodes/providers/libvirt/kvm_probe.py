"""Does KVM really run a guest here? Opening /dev/kvm is not enough to know.

Seen on nested machines: /dev/kvm exists and accepts KVM_CREATE_VM, yet guests hang under
`-accel kvm` and `-cpu host` aborts on an MSR write. So the probe boots a real Linux kernel
under KVM with the CPU model the VMs would get (`-cpu host`) and no root disk: a kernel that
works reaches "VFS: Unable to mount root" within seconds. Anything else (abort, hang,
timeout) means TCG. The answer is cached per host kernel, qemu and guest kernel.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import selectors
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

QEMU = "qemu-system-x86_64"
# The last things a kernel without a root filesystem prints: it got through all of its init.
_BOOTED_MARKERS = ("VFS: Unable to mount root", "Kernel panic", "Run /init")
CACHE_FILE = Path.home() / ".cache" / "cnilab" / "kvm-probe.json"

Accel = Literal["kvm", "tcg"]


@dataclass(frozen=True)
class ProbeResult:
    kvm_works: bool
    detail: str
    seconds: float


@dataclass(frozen=True)
class AccelChoice:
    accel: Accel
    reason: str
    warning: str = ""       # set when the user should know (fell back to slow TCG)

    @property
    def domain_type(self) -> str:
        return "kvm" if self.accel == "kvm" else "qemu"


def probe_argv(kernel: Path, qemu: str = QEMU, accel: str = "kvm") -> list[str]:
    cpu = "host" if accel == "kvm" else "max"   # the CPU models the domains would get
    return [qemu, "-accel", accel, "-cpu", cpu, "-m", "256", "-smp", "1",
            "-nodefaults", "-display", "none", "-serial", "stdio", "-no-reboot",
            "-kernel", str(kernel),
            "-append", "console=ttyS0 panic=-1 root=/dev/cnilab-probe-none loglevel=4"]


def probe_kvm(kernel: Path, *, timeout: float = 20, qemu: str = QEMU,
              accel: str = "kvm") -> ProbeResult:
    """Boots kernel under KVM; True only if it reaches the end of its init in time.
    (accel="tcg" runs the same probe under emulation: tests use it as the positive case.)"""
    if accel == "kvm" and not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return ProbeResult(False, "/dev/kvm is missing or not accessible", 0.0)
    started = time.monotonic()
    try:
        proc = subprocess.Popen(probe_argv(kernel, qemu, accel), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return ProbeResult(False, f"{qemu} is not installed", 0.0)
    assert proc.stdout is not None
    output = b""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        while (left := timeout - (time.monotonic() - started)) > 0:
            if not sel.select(timeout=min(left, 0.5)):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break              # qemu exited
            output += chunk
            text = output.decode(errors="replace")
            if any(m in text for m in _BOOTED_MARKERS):
                return ProbeResult(True, f"a Linux kernel booted under {accel.upper()}",
                                   round(time.monotonic() - started, 2))
    finally:
        sel.close()
        proc.kill()
        proc.wait()
    seconds = round(time.monotonic() - started, 2)
    lines = output.decode(errors="replace").strip().splitlines()
    if proc.returncode not in (None, -9) and seconds < timeout:
        first = lines[0] if lines else f"rc={proc.returncode}"   # qemu's own reason
        return ProbeResult(False, f"qemu -accel {accel} exited: {first}", seconds)
    return ProbeResult(False, f"a kernel did not boot under {accel.upper()} within "
                              f"{timeout:.0f} s", seconds)


def _qemu_version(qemu: str) -> str:
    try:
        out = subprocess.run([qemu, "--version"], capture_output=True, text=True, timeout=10)
        return out.stdout.splitlines()[0] if out.stdout else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def _cache_key(kernel: Path, qemu: str) -> str:
    parts = [platform.release(), _qemu_version(qemu), str(kernel),
             str(kernel.stat().st_size) if kernel.exists() else "", str(Path("/dev/kvm").exists())]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def cached_probe(kernel: Path, *, cache_file: Path = CACHE_FILE, qemu: str = QEMU,
                 timeout: float = 20) -> ProbeResult:
    key = _cache_key(kernel, qemu)
    try:
        stored = json.loads(cache_file.read_text())
        if stored.get("key") == key:
            return ProbeResult(**stored["result"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    result = probe_kvm(kernel, timeout=timeout, qemu=qemu)
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        cache_file.write_text(json.dumps({"key": key, "result": asdict(result)}) + "\n")
    except OSError:
        pass                       # caching is an optimisation only
    return result


def find_probe_kernel(candidates: list[Path]) -> Path | None:
    """A kernel to probe with: the image's own first, else the host's."""
    for path in [*candidates, *sorted(Path("/boot").glob("vmlinuz-*"), reverse=True)]:
        if path.is_file() and os.access(path, os.R_OK):
            return path
    return None


def choose_accel(setting: str, *, kernel: Path | None, local: bool = True,
                 cache_file: Path = CACHE_FILE) -> AccelChoice:
    """The accelerator the lab's VMs use. `setting` is the config's accel: auto, kvm or tcg."""
    if setting == "kvm":
        return AccelChoice("kvm", "forced by [libvirt] accel = \"kvm\"")
    if setting == "tcg":
        return AccelChoice("tcg", "forced by [libvirt] accel = \"tcg\"")
    fallback = "falling back to TCG (software emulation): VMs boot several times slower"
    if not local:
        return AccelChoice("tcg", "remote libvirt: cannot probe KVM from here",
                           warning=f"cannot probe KVM on a remote libvirt; {fallback}; set "
                                   "[libvirt] accel = \"kvm\" if that host has working KVM")
    if kernel is None:
        return AccelChoice("tcg", "no kernel to probe KVM with",
                           warning=f"no kernel to probe KVM with; {fallback}; set "
                                   "[libvirt] accel = \"kvm\" to force it")
    result = cached_probe(kernel, cache_file=cache_file)
    if result.kvm_works:
        return AccelChoice("kvm", f"probe: {result.detail} in {result.seconds} s")
    return AccelChoice("tcg", f"probe: {result.detail}",
                       warning=f"KVM does not run guests here ({result.detail}); {fallback}")
