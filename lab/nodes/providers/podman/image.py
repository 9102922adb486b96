"""`lab image node`: the container nodes' image, from Debian packages (mmdebstrap) imported
into the harness's podman storage (`podman import`), as `lab image pod` makes the pod images.

    localhost/cnilab/node:bookworm-<recipe>   python3 (Python plugins), iproute2, iptables and
        nftables, ping, iperf3, the reference CNI plugins (host-local), what K3s runs inside a
        node (conntrack, ethtool, socat, kmod, mount), catatonit as PID 1

The K3s binary is not in it: `lab up` copies the air-gapped one in, as on VMs, so one image
serves every K3s version. The tag carries a hash of the recipe, so a changed recipe is a new
image and an unchanged one is never rebuilt.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from lab.api import LabError
from lab.nodes.debian_build import apt_mirror, apt_sources, run_step, start_build
from lab.nodes.providers.podman.cmdlines import Storage

RECIPE_VERSION = 1
SUITE = "bookworm"
IMAGE_REPO = "localhost/cnilab/node"
INIT = "/usr/local/sbin/cnilab-node-init"
PACKAGES = (
    "python3", "iproute2", "iputils-ping", "procps", "iperf3", "kmod", "ca-certificates",
    "iptables", "nftables", "conntrack", "ethtool", "socat", "util-linux", "mount",
    "containernetworking-plugins",   # host-local IPAM + reference plugins in /usr/lib/cni
    "catatonit",                     # PID 1: reaps what commands entered with nsenter leave
    "xdelta3",                       # lab deploy sends a changed plugin as a delta
)
# PID 1 of every node. Mounts shared first (kind's entrypoint does the same): kubelet's
# mounts under /var/lib/kubelet must reach the pods' containers.
INIT_SCRIPT = """#!/bin/sh
# cnilab container node: shared mounts, then catatonit as init (it reaps orphans)
mount --make-rshared / 2>/dev/null
exec /usr/bin/catatonit -- /bin/sleep infinity
"""
EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*",
            "/usr/share/lintian/*")


def recipe(mirror: str) -> dict[str, object]:
    return {"version": RECIPE_VERSION, "suite": SUITE, "mirror": mirror,
            "packages": list(PACKAGES), "init": INIT_SCRIPT, "excludes": list(EXCLUDES)}


def image_ref(mirror: str) -> str:
    key = hashlib.sha256(json.dumps(recipe(mirror), sort_keys=True).encode()).hexdigest()[:12]
    return f"{IMAGE_REPO}:{SUITE}-{key}"


def mmdebstrap_argv(rootfs_tar: Path, mirror: str) -> list[str]:
    hook = (f'mkdir -p "$1{INIT.rsplit("/", 1)[0]}" && printf %s {_sh_quote(INIT_SCRIPT)} '
            f'> "$1{INIT}" && chmod 0755 "$1{INIT}"')
    argv = ["mmdebstrap", "--variant=minbase", "--mode=root", "--format=tar",
            "--include=" + ",".join(PACKAGES), f"--customize-hook={hook}",
            '--customize-hook=rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin']
    argv += [f"--dpkgopt=path-exclude={pattern}" for pattern in EXCLUDES]
    return [*argv, SUITE, str(rootfs_tar), *apt_sources(mirror, SUITE)]


def import_argv(storage: Storage, rootfs_tar: Path, ref: str) -> list[str]:
    return storage.argv("import", "--change", f'ENTRYPOINT ["{INIT}"]',
                        "--change", "STOPSIGNAL SIGTERM", str(rootfs_tar), ref)


def _sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def image_exists(storage: Storage, ref: str) -> bool:
    done = subprocess.run(storage.argv("image", "exists", ref), capture_output=True,
                          timeout=60, check=False)
    return done.returncode == 0


def build_node_image(storage: Storage, *, mirror: str | None = None, force: bool = False,
                     report: Callable[[str], None] | None = None) -> tuple[str, float | None]:
    """The node image in storage: (reference, seconds it took, None when it was current)."""
    say = report or (lambda _msg: None)
    mirror = mirror or apt_mirror()
    ref = image_ref(mirror)
    if not force and image_exists(storage, ref):
        say(f"{ref}: current")
        return ref, None
    started = time.monotonic()
    folder = storage.root / "build"
    folder.mkdir(parents=True, exist_ok=True)
    work, log = start_build(folder, "node-image")
    hint = "apt-get install mmdebstrap podman"
    try:
        rootfs = work / "rootfs.tar"
        say(f"{ref}: mmdebstrap {len(PACKAGES)} packages (log: {log})")
        run_step(mmdebstrap_argv(rootfs, mirror), log, "installing packages (mmdebstrap)",
                 what="node image build", install_hint=hint)
        say(f"{ref}: podman import")
        run_step(import_argv(storage, rootfs, ref), log, "importing (podman import)",
                 what="node image build", install_hint=hint)
        # the image this one replaced (a --force rebuild) lost its tag: nothing else of the
        # harness's own storage can be dangling
        run_step(storage.argv("image", "prune", "--force"), log, "dropping replaced images",
                 what="node image build", install_hint=hint)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    seconds = time.monotonic() - started
    say(f"{ref}: built in {seconds:.0f} s")
    return ref, seconds


def ensure_node_image(storage: Storage, configured: str | None,
                      report: Callable[[str], None] | None = None) -> str:
    """The image nodes start from: the configured one (it must be in the lab's storage), else
    the node image, built now when missing (a few minutes, once)."""
    if configured:
        if not image_exists(storage, configured):
            raise LabError(f"podman.image {configured} is not in the lab's podman storage "
                           f"({storage.root})",
                           hint=f"podman --root {storage.root}/storage load/import it, or "
                                "leave podman.image out for the node image `lab image node` "
                                "builds")
        return configured
    return build_node_image(storage, report=report)[0]
