"""`lab image pod`: the scenario pod image and a pause image, built from Debian packages and
saved as docker-archive tarballs that K3s imports air-gapped (what `kind load` gives kind users).

    cnilab-pod.tar    localhost/cnilab/pod:bookworm-N     ip, ping, iperf3, python3 (TCP echo)
    cnilab-pause.tar  localhost/cnilab/pause:bookworm-N   catatonit -P as the sandbox process

`lab image multus --from DIR` builds the Multus daemonset image the same way around binaries
built from Multus's public source (upstream's image is Debian plus those binaries), named as
upstream names it so the daemonset manifest finds it without a pull.

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
    files: tuple[tuple[Path, str], ...] = ()   # harness file -> folder in the image

    def recipe(self, mirror: str) -> dict[str, object]:
        recipe: dict[str, object] = {
            "version": RECIPE_VERSION, "suite": SUITE, "mirror": mirror, "ref": self.ref,
            "variant": self.variant, "packages": list(self.packages),
            "changes": list(self.changes), "excludes": list(_EXCLUDES)}
        if self.files:      # a new binary is a new image
            recipe["files"] = [[_digest(local), folder] for local, folder in self.files]
        return recipe

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


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# Multus's binaries per flavor, as upstream's images lay them out (Dockerfile.thick / the thin
# Dockerfile): everything in /usr/src/multus-cni/bin, the thin entrypoints also at /.
MULTUS_BIN = "/usr/src/multus-cni/bin"
MULTUS_NEEDS = {"thick": ("multus-daemon", "multus-shim", "install_multus"),
                "thin": ("multus", "thin_entrypoint", "install_multus")}
# Carried when built: passthru (install_multus installs it beside the shim). The thick image
# leaves out kubeconfig_generator and cert-approver (112 MB its daemonset never runs: every
# node pulls and unpacks the image, 14-17 minutes for 362 MB on 3 TCG guests).
MULTUS_OPTIONAL = {"thick": ("passthru",),
                   "thin": ("kubeconfig_generator", "passthru", "cert-approver")}
MULTUS_AT_ROOT = {"thin": ("thin_entrypoint", "install_multus"), "thick": ()}


def multus_image(binaries: Path, version: str, flavor: str) -> PodImage:
    """The Multus daemonset image of `version`/`flavor` around the binaries in `binaries`,
    named as upstream's (the manifest's default image), or an error naming what is missing."""
    from lab.config.k3s import MultusSettings

    if flavor not in MULTUS_NEEDS:
        raise LabError(f"unknown Multus flavor {flavor!r}", hint="use thick or thin")
    binaries = binaries.absolute()
    if any(c.isspace() for c in str(binaries)):   # mmdebstrap's copy-in splits on spaces
        raise LabError(f"--from {binaries}: a folder whose path has no spaces, please",
                       hint="copy or link the binaries to such a folder")
    missing = [name for name in MULTUS_NEEDS[flavor] if not (binaries / name).is_file()]
    if missing:
        raise LabError(f"{binaries} lacks the Multus {flavor} binaries {', '.join(missing)}",
                       hint="build them from k8snetworkplumbingwg/multus-cni (its "
                            "hack/build-go.sh) and point --from at the folder holding them")
    names = [*MULTUS_NEEDS[flavor],
             *(n for n in MULTUS_OPTIONAL[flavor] if (binaries / n).is_file())]
    files = [(binaries / name, MULTUS_BIN) for name in names]
    files += [(binaries / name, "/") for name in MULTUS_AT_ROOT[flavor]]
    ref = MultusSettings.model_validate({"version": version, "flavor": flavor}).image_ref
    return PodImage(file=f"cnilab-multus-{version}-{flavor}.tar", ref=ref, variant="essential",
                    packages=("ca-certificates",), changes=(), files=tuple(files))


def default_output_dir() -> Path:
    if os.geteuid() == 0:
        return SYSTEM_DIR
    return Path.home() / ".cache" / "cnilab" / "pod-images"


def mmdebstrap_argv(image: PodImage, rootfs_tar: Path, mirror: str) -> list[str]:
    argv = ["mmdebstrap", f"--variant={image.variant}", "--mode=root", "--format=tar",
            "--include=" + ",".join(image.packages)]
    argv += [f"--dpkgopt=path-exclude={pattern}" for pattern in _EXCLUDES]
    for folder in sorted({folder for _, folder in image.files}):
        argv.append(f'--customize-hook=mkdir -p "$1{folder}"')
    for local, folder in image.files:
        argv.append(f"--customize-hook=copy-in {local} {folder}")
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
                     force: bool = False, report: Callable[[str], None] | None = None,
                     images: tuple[PodImage, ...] = IMAGES,
                     ) -> list[tuple[PodImage, Path, float | None]]:
    """The images (default: pod and pause) into out_dir (default: /var/cache/cnilab/pod-images
    as root)."""
    if os.geteuid() != 0:
        raise LabError("lab image pod needs root (mmdebstrap --mode=root)",
                       hint="run it with sudo")
    out_dir = (out_dir or default_output_dir()).absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    mirror = mirror or apt_mirror()
    return [(image, *build_one(image, out_dir, mirror, force=force, report=report))
            for image in images]
