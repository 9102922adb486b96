"""`lab image build`: a bootable Debian 12 qcow2 from Debian packages alone (mmdebstrap).

For air-gapped runners and for machines where the official cloud images cannot be downloaded.
The result is a directory holding `disk.qcow2` (ext4 straight on the disk, no partition table),
`vmlinuz` and `initrd.img`: VMs boot the kernel directly (`root=/dev/vda`), so no boot loader is
installed or needed. The directory name carries a hash of the recipe, so a repeated build with
the same recipe finds the finished image and skips the work.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lab.api import LabError
from lab.nodes.debian_build import apt_mirror, apt_sources, run_step, start_build

# Bump when the steps below change in a way the package list does not show.
RECIPE_VERSION = 6
SUITE = "bookworm"
BUILT_IMAGE_NAME = "cnilab-debian-12"
SYSTEM_CACHE = Path("/var/cache/cnilab/images")

PACKAGES = (
    "linux-image-cloud-amd64",      # virtio drivers, small: the kernel we boot directly
    "systemd-sysv", "udev", "dbus",  # init; dbus lets cloud-init call hostnamectl
    "openssh-server", "sudo",
    "cloud-init",                   # reads the NoCloud seed: user, keys, host keys, hostname
    "python3", "iproute2", "iputils-ping", "procps",
    "containernetworking-plugins",  # host-local IPAM + reference plugins in /usr/lib/cni
    "iperf3",                       # the scenarios' pod/node throughput figures
    # K3s on the node: containerd refuses to start containers where the kernel has AppArmor
    # but apparmor_parser is missing; kube-proxy and flannel program iptables; K3s's unit
    # modprobes br_netfilter and overlay.
    "apparmor", "iptables", "kmod",
    # what K3s's release binary carries in its k3s-root userland, for a K3s built from source
    # without it: kube-router's network policy needs ipset, kube-proxy conntrack
    "ipset", "conntrack", "ethtool", "socat",
    "xdelta3",                      # lab deploy sends a changed plugin as a delta
    "curl", "ca-certificates",      # connected K3s labs download and check the release binary
)

# Run by mmdebstrap with $1 = the new root. Each line is a shell command.
CUSTOMIZE_HOOKS = (
    'printf "/dev/vda / ext4 rw,errors=remount-ro 0 1\\n" > "$1/etc/fstab"',
    'echo cnilab > "$1/etc/hostname"',
    # DHCP on the NIC from the start, by networkd: the image needs no cloud-init stage before
    # the network, so cloud-init's local stage (~25 s of Python start-up under TCG) is masked
    # and the seed is read once, by the network stage (NoCloud reads the cidata disk there too).
    'printf "[Match]\\nName=en* eth*\\n\\n[Network]\\nDHCP=ipv4\\n" '
    '> "$1/etc/systemd/network/90-cnilab-dhcp.network"',
    'chroot "$1" systemctl enable systemd-networkd.service',
    'chroot "$1" systemctl mask cloud-init-local.service',
    # Only the seed ISO counts: probing cloud metadata services would wait on timeouts.
    'printf "datasource_list: [NoCloud, None]\\n" > "$1/etc/cloud/cloud.cfg.d/90-cnilab.cfg"',
    'printf "PasswordAuthentication no\\n" > "$1/etc/ssh/sshd_config.d/50-cnilab.conf"',
    # Every command the harness runs is an SSH session; the login parts of sshd's PAM stack
    # (pam_systemd registering a logind session, pam_motd running update-motd.d) cost half a
    # second per session on a TCG guest. Sessions get the non-interactive stack, as cron's.
    'sed -i -e "s/^@include common-session$/@include common-session-noninteractive/" '
    '-e "/pam_motd.so/d" -e "/pam_mail.so/d" "$1/etc/pam.d/sshd"',
    # Every VM gets its own host keys from its seed; none may be shared through the image.
    'rm -f "$1"/etc/ssh/ssh_host_*',
    'rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin',
)


# transparent_hugepage=madvise (Ubuntu's default; Debian's is "always"): under TCG, khugepaged
# collapsing a K3s node's Go heaps into huge pages took 80 % of a guest CPU its API server needed.
KERNEL_CMDLINE = "root=/dev/vda rw console=ttyS0 transparent_hugepage=madvise"

@dataclass(frozen=True)
class BuiltImage:
    """A finished build: the disk and the kernel + initrd it boots with."""

    directory: Path

    @property
    def disk(self) -> Path:
        return self.directory / "disk.qcow2"

    @property
    def kernel(self) -> Path:
        return self.directory / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.directory / "initrd.img"

    @property
    def manifest(self) -> Path:
        return self.directory / "manifest.json"

    def is_complete(self) -> bool:
        return all(p.is_file() for p in (self.disk, self.kernel, self.initrd, self.manifest))

    def info(self) -> dict[str, object]:
        info: dict[str, object] = json.loads(self.manifest.read_text())
        return info


def default_cache_dir() -> Path:
    """The machine-wide cache when we may write it (root, CI), else the user's."""
    if os.geteuid() == 0 or os.access(SYSTEM_CACHE.parent, os.W_OK):
        return SYSTEM_CACHE
    return Path.home() / ".cache" / "cnilab" / "images"


def recipe(mirror: str) -> dict[str, object]:
    return {"version": RECIPE_VERSION, "suite": SUITE, "mirror": mirror,
            "packages": list(PACKAGES), "hooks": list(CUSTOMIZE_HOOKS)}


def recipe_key(mirror: str) -> str:
    blob = json.dumps(recipe(mirror), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def image_for(cache_dir: Path, mirror: str) -> BuiltImage:
    return BuiltImage(cache_dir / f"{BUILT_IMAGE_NAME}-{recipe_key(mirror)}")


def find_built(cache_dir: Path | None = None) -> BuiltImage | None:
    """The newest complete built image in the cache, whatever its recipe."""
    cache_dir = cache_dir or default_cache_dir()
    found = [BuiltImage(d) for d in cache_dir.glob(f"{BUILT_IMAGE_NAME}-*") if d.is_dir()]
    complete = [b for b in found if b.is_complete()]
    return max(complete, key=lambda b: b.manifest.stat().st_mtime) if complete else None


def mmdebstrap_argv(rootdir: Path, mirror: str) -> list[str]:
    """The mmdebstrap command line (pure, unit-tested)."""
    argv = ["mmdebstrap", "--variant=minbase", "--mode=root", "--format=directory",
            "--include=" + ",".join(PACKAGES)]
    argv += [f"--customize-hook={hook}" for hook in CUSTOMIZE_HOOKS]
    return [*argv, SUITE, str(rootdir), *apt_sources(mirror, SUITE)]


@contextlib.contextmanager
def _build_lock(cache_dir: Path) -> Iterator[None]:
    """One build at a time per cache: a second `lab image build` waits, then finds it done."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run(argv: list[str], log: Path, step: str) -> None:
    run_step(argv, log, step, what="image build",
             install_hint="apt-get install mmdebstrap e2fsprogs qemu-utils")


def _single(pattern: str, boot: Path) -> Path:
    found = sorted(boot.glob(pattern))
    if not found:
        raise LabError(f"image build: no {pattern} in {boot}", hint="is a kernel package included?")
    return found[-1]


def _dir_size(root: Path) -> int:
    proc = subprocess.run(["du", "-sb", "-x", str(root)], capture_output=True, text=True,
                          check=True)
    return int(proc.stdout.split()[0])


def build_image(cache_dir: Path | None = None, *, mirror: str | None = None, force: bool = False,
                report: Callable[[str], None] | None = None) -> tuple[BuiltImage, float | None]:
    """Builds the image unless the cache already holds it. Returns it and the build seconds
    (None when it came from the cache)."""
    say = report or (lambda _msg: None)
    if os.geteuid() != 0:
        raise LabError("lab image build needs root (mmdebstrap --mode=root, mkfs.ext4 -d)",
                       hint="run it with sudo, or use a downloaded image (image = \"debian-12\")")
    cache_dir = cache_dir or default_cache_dir()
    mirror = mirror or apt_mirror()
    image = image_for(cache_dir, mirror)
    with _build_lock(cache_dir):
        if image.is_complete() and not force:
            say(f"image cached: {image.directory}")
            return image, None
        started = time.monotonic()
        work, log = start_build(cache_dir, image.directory.name)
        try:
            rootdir = work / "root"
            say(f"mmdebstrap {SUITE} from {mirror} (log: {log})")
            _run(mmdebstrap_argv(rootdir, mirror), log, "installing packages (mmdebstrap)")
            boot = rootdir / "boot"
            shutil.copyfile(_single("vmlinuz-*", boot), work / "vmlinuz")
            shutil.copyfile(_single("initrd.img-*", boot), work / "initrd.img")
            # Sparse 3 GiB filesystem: room for the labs' files; qcow2 keeps only used blocks.
            size = max(3 << 30, int(_dir_size(rootdir) * 1.5))
            say("ext4 filesystem (mkfs.ext4 -d) → qcow2")
            raw = work / "root.ext4"
            _run(["mkfs.ext4", "-q", "-F", "-L", "cnilab-root", "-d", str(rootdir), str(raw),
                  f"{size // (1 << 20)}M"], log, "making the ext4 filesystem")
            _run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw),
                  str(work / "disk.qcow2")], log, "converting to qcow2")
            raw.unlink()
            shutil.rmtree(rootdir)
            seconds = time.monotonic() - started
            manifest = {**recipe(mirror), "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                   time.gmtime()),
                        "build_seconds": round(seconds, 1),
                        "kernel_cmdline": KERNEL_CMDLINE}
            (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
            for f in work.iterdir():
                f.chmod(0o644)   # qemu runs as libvirt-qemu: it must read the base image
            work.chmod(0o755)
            shutil.rmtree(image.directory, ignore_errors=True)
            work.rename(image.directory)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        say(f"built {image.directory} in {seconds:.0f} s")
        return image, seconds
