"""`lab image pod`: the scenario pod image and a pause image, built from Debian packages and
saved as docker-archive tarballs that K3s imports air-gapped (what `kind load` gives kind users).

    cnilab-pod.tar    localhost/cnilab/pod:bookworm-N     ip, ping, iperf3, python3 (TCP echo)
    cnilab-pause.tar  localhost/cnilab/pause:bookworm-N   catatonit -P as the sandbox process

mmdebstrap writes each root filesystem as a tarball; podman (Debian's package) turns it into an
image and saves it. podman, not a hand-written archive writer: it computes the layer digests,
the image config and the manifest every runtime reads, and `podman load` can check the result.
It runs with private, throw-away storage (vfs driver), so the host's podman images are never
touched. A tarball whose recipe is unchanged is not rebuilt.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lab.api import LabError
from lab.nodes.debian_build import apt_mirror, apt_sources, run_step, start_build

RECIPE_VERSION = 1
SUITE = "bookworm"
POD_IMAGE_FILE = "cnilab-pod.tar"
PAUSE_IMAGE_FILE = "cnilab-pause.tar"
POD_IMAGE_REF = f"localhost/cnilab/pod:{SUITE}-{RECIPE_VERSION}"
PAUSE_IMAGE_REF = f"localhost/cnilab/pause:{SUITE}-{RECIPE_VERSION}"
SYSTEM_DIR = Path("/var/cache/cnilab/pod-images")
# Documentation and translations are most of a small image and nothing a probe reads.
_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*",
             "/usr/share/lintian/*")


@dataclass(frozen=True)
class PodImage:
    """One image: which packages (mmdebstrap variant), its reference, how it starts."""

    file: str
    ref: str
    variant: str
    packages: tuple[str, ...]
    changes: tuple[str, ...]      # podman import --change lines (Dockerfile syntax)

    def recipe(self, mirror: str) -> dict[str, object]:
        return {"version": RECIPE_VERSION, "suite": SUITE, "mirror": mirror, "ref": self.ref,
                "variant": self.variant, "packages": list(self.packages),
                "changes": list(self.changes), "excludes": list(_EXCLUDES)}

    def recipe_key(self, mirror: str) -> str:
        blob = json.dumps(self.recipe(mirror), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


POD_IMAGE = PodImage(
    file=POD_IMAGE_FILE, ref=POD_IMAGE_REF, variant="essential",
    # What the scenarios exec in a pod: ip, ping, iperf3, python3 (TCP echo), kill/ps.
    packages=("iproute2", "iputils-ping", "iperf3", "python3-minimal", "procps"),
    changes=('CMD ["sleep", "infinity"]',))
PAUSE_IMAGE = PodImage(
    file=PAUSE_IMAGE_FILE, ref=PAUSE_IMAGE_REF, variant="extract",
    # catatonit -P is what podman's own pause process runs: sleeps, reaps, exits on SIGTERM.
    packages=("catatonit",),
    changes=('ENTRYPOINT ["/usr/bin/catatonit", "-P"]',))
IMAGES = (POD_IMAGE, PAUSE_IMAGE)


def default_output_dir() -> Path:
    if os.geteuid() == 0:
        return SYSTEM_DIR
    return Path.home() / ".cache" / "cnilab" / "pod-images"


def mmdebstrap_argv(image: PodImage, rootfs_tar: Path, mirror: str) -> list[str]:
    argv = ["mmdebstrap", f"--variant={image.variant}", "--mode=root", "--format=tar",
            "--include=" + ",".join(image.packages)]
    argv += [f"--dpkgopt=path-exclude={pattern}" for pattern in _EXCLUDES]
    return [*argv, SUITE, str(rootfs_tar), *apt_sources(mirror, SUITE)]


@dataclass(frozen=True)
class PodmanStorage:
    """Private podman storage: nothing of the host's podman is read or written. podman wants
    its run root short (at most 50 characters), so that one lives under /tmp."""

    root: Path
    runroot: Path

    def argv(self, *args: str) -> list[str]:
        return ["podman", "--root", str(self.root), "--runroot", str(self.runroot),
                "--storage-driver", "vfs", "--events-backend", "none",
                "--cgroup-manager", "cgroupfs", *args]


def import_argv(image: PodImage, storage: PodmanStorage, rootfs_tar: Path) -> list[str]:
    changes = [arg for change in image.changes for arg in ("--change", change)]
    return storage.argv("import", *changes, str(rootfs_tar), image.ref)


def save_argv(image: PodImage, storage: PodmanStorage, out: Path) -> list[str]:
    return storage.argv("save", "--format", "docker-archive", "-o", str(out), image.ref)


def _run(argv: list[str], log: Path, step: str) -> None:
    run_step(argv, log, step, what="pod image build",
             install_hint="apt-get install mmdebstrap podman")


def _stamp(out_dir: Path, image: PodImage) -> Path:
    return out_dir / f"{image.file}.recipe"


def is_current(out_dir: Path, image: PodImage, mirror: str) -> bool:
    stamp = _stamp(out_dir, image)
    return ((out_dir / image.file).is_file() and stamp.is_file()
            and stamp.read_text().strip() == image.recipe_key(mirror))


def build_one(image: PodImage, out_dir: Path, mirror: str, *, force: bool = False,
              report: Callable[[str], None] | None = None) -> tuple[Path, float | None]:
    """Builds one image tarball into out_dir unless it is current; (path, seconds or None)."""
    say = report or (lambda _msg: None)
    target = out_dir / image.file
    if not force and is_current(out_dir, image, mirror):
        say(f"{image.ref}: current ({target})")
        return target, None
    started = time.monotonic()
    work, log = start_build(out_dir, image.file)
    storage = PodmanStorage(work / "storage", Path(tempfile.mkdtemp(prefix="cnilab-podman-")))
    try:
        rootfs = work / "rootfs.tar"
        say(f"{image.ref}: mmdebstrap {' '.join(image.packages)} (log: {log})")
        _run(mmdebstrap_argv(image, rootfs, mirror), log, "installing packages (mmdebstrap)")
        say(f"{image.ref}: podman import + save")
        _run(import_argv(image, storage, rootfs), log, "importing (podman import)")
        saved = work / image.file
        _run(save_argv(image, storage, saved), log, "saving (podman save)")
        saved.chmod(0o644)
        saved.replace(target)
        _stamp(out_dir, image).write_text(image.recipe_key(mirror) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(storage.runroot, ignore_errors=True)
    seconds = time.monotonic() - started
    say(f"{image.ref}: {target} ({target.stat().st_size / 2**20:.0f} MiB, {seconds:.0f} s)")
    return target, seconds


def build_pod_images(out_dir: Path | None = None, *, mirror: str | None = None,
                     force: bool = False, report: Callable[[str], None] | None = None
                     ) -> list[tuple[PodImage, Path, float | None]]:
    """Both images into out_dir (default: /var/cache/cnilab/pod-images as root)."""
    if os.geteuid() != 0:
        raise LabError("lab image pod needs root (mmdebstrap --mode=root)",
                       hint="run it with sudo")
    out_dir = (out_dir or default_output_dir()).absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    mirror = mirror or apt_mirror()
    return [(image, *build_one(image, out_dir, mirror, force=force, report=report))
            for image in IMAGES]
