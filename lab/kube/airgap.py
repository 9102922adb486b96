"""Air-gapped inputs: one folder on the harness holding everything the nodes cannot download.

    <airgap dir>/k3s                  the K3s binary (release asset or built from source)
    <airgap dir>/multus               the thin Multus binary ([multus] mode = "host")
    <airgap dir>/install.sh           optional: upstream install.sh of the same release
    <airgap dir>/*.tar[.zst|.gz]      image tarballs imported by K3s at start (its air-gap
                                      images, `lab image pod`'s cnilab-pod.tar and
                                      cnilab-pause.tar, a Multus image …)

The folder is `[k3s] airgap_dir`, else $CNILAB_AIRGAP_DIR, else ./airgap (relative paths: from
the working directory, then from the config's folder). Explicit `binary`, `images`,
`install_script` and `[multus] binary` win over what the folder holds.
"""
from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.api import LabError
from lab.config.k3s import K3sSettings, MultusSettings
from lab.kube.pod_images import PAUSE_IMAGE_FILE, PAUSE_IMAGE_REF, POD_IMAGE_FILE, POD_IMAGE_REF

ENV_VAR = "CNILAB_AIRGAP_DIR"
DEFAULT_DIR = Path("airgap")
IMAGE_SUFFIXES = (".tar", ".tar.zst", ".tar.gz", ".tgz")
CONNECTED_POD_IMAGE = "docker.io/nicolaka/netshoot:v0.13"
_VERSION_LINE = re.compile(r"^k3s version (v\S+)")


@dataclass(frozen=True)
class ClusterInputs:
    """What `lab up` copies to the nodes and which images the pods run, all resolved."""

    binary: Path | None                  # None: connected mode downloads it on the node
    images: tuple[Path, ...] = ()
    install_script: Path | None = None
    multus_binary: Path | None = None
    pod_image: str = CONNECTED_POD_IMAGE
    pod_image_pull_policy: str = "IfNotPresent"
    pause_image: str | None = None
    notes: list[str] = field(default_factory=list, compare=False)


def _resolve(path: Path, base: Path | None) -> Path:
    path = path.expanduser()
    if path.is_absolute() or path.exists() or base is None:
        return path.absolute()
    return (base / path).absolute()


def airgap_dir(settings: K3sSettings, config_dir: Path | None,
               env: dict[str, str] | None = None) -> tuple[Path, str]:
    """The folder and where its name came from (for error messages)."""
    environ = os.environ if env is None else env
    if settings.airgap_dir is not None:
        return _resolve(settings.airgap_dir, config_dir), "k3s.airgap_dir"
    if environ.get(ENV_VAR):
        return Path(environ[ENV_VAR]).expanduser().absolute(), f"${ENV_VAR}"
    return _resolve(DEFAULT_DIR, config_dir), f"the default ./{DEFAULT_DIR} (${ENV_VAR} unset)"


def _file(path: Path, base: Path | None, key: str) -> Path:
    resolved = _resolve(path, base)
    if not resolved.is_file():
        raise LabError(f"{key}: no such file {resolved}",
                       hint="air-gapped labs need their inputs on the harness: see docs/k8s.md")
    return resolved


def image_tarballs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.name.endswith(IMAGE_SUFFIXES))


def resolve_inputs(config: Any, env: dict[str, str] | None = None) -> ClusterInputs:
    """Every harness-side input of a [k3s] lab, or one error naming each missing file."""
    settings: K3sSettings = config.k3s
    multus: MultusSettings | None = getattr(config, "multus", None)
    base = config.source.parent if getattr(config, "source", None) else None
    multus_explicit = multus.binary if multus is not None else None
    wants_multus_binary = multus is not None and multus.mode == "host"
    if settings.mode == "connected":
        multus_binary = (_file(multus_explicit, base, "multus.binary")
                         if wants_multus_binary and multus_explicit is not None else None)
        if wants_multus_binary and multus_binary is None:
            raise LabError("multus.binary: [multus] mode = \"host\" needs the thin multus binary",
                           hint="set multus.binary, or use k3s.mode = \"airgap\" with the "
                                "binary in the airgap folder")
        image, pull_policy = pod_image_of(config)
        return ClusterInputs(
            binary=None,
            images=tuple(_file(p, base, "k3s.images") for p in settings.images),
            install_script=(_file(settings.install_script, base, "k3s.install_script")
                            if settings.install_script else None),
            multus_binary=multus_binary,
            pod_image=image, pod_image_pull_policy=pull_policy,
            pause_image=settings.pause_image)

    folder, origin = airgap_dir(settings, base, env)
    has_folder = folder.is_dir()
    missing: list[str] = []

    def pick(explicit: Path | None, name: str, key: str, required: bool) -> Path | None:
        if explicit is not None:
            return _file(explicit, base, key)
        candidate = folder / name
        if has_folder and candidate.is_file():
            return candidate
        if required:
            missing.append(f"{name} (or {key})")
        return None

    binary = pick(settings.binary, "k3s", "k3s.binary", True)
    multus_binary = (pick(multus_explicit, "multus", "multus.binary", True)
                     if wants_multus_binary else None)
    install_script = pick(settings.install_script, "install.sh", "k3s.install_script", False)
    if missing:
        where = f"{folder} ({origin})" + ("" if has_folder else ": no such folder")
        raise LabError(f"air-gapped inputs missing in {where}: {', '.join(missing)}",
                       hint=f"put them there, point {ENV_VAR} or k3s.airgap_dir at the folder "
                            "that has them, or name each file in the config; docs/k8s.md says "
                            "where they come from")
    images = ([_file(p, base, "k3s.images") for p in settings.images] if settings.images
              else image_tarballs(folder) if has_folder else [])
    names = {p.name for p in images}
    pod_image = settings.pod_image or (POD_IMAGE_REF if POD_IMAGE_FILE in names else None)
    if pod_image is None:
        among = "k3s.images" if settings.images else str(folder)
        raise LabError(f"no pod image for an air-gapped lab: k3s.pod_image is not set and "
                       f"{among} holds no {POD_IMAGE_FILE}",
                       hint=f"`lab image pod -o {folder}` builds it from Debian packages, or "
                            "set k3s.pod_image to an image in one of the tarballs")
    pause_image = settings.pause_image or (PAUSE_IMAGE_REF if PAUSE_IMAGE_FILE in names
                                           else None)
    return ClusterInputs(binary=binary, images=tuple(images), install_script=install_script,
                         multus_binary=multus_binary, pod_image=pod_image,
                         pod_image_pull_policy=settings.pod_image_pull_policy or "Never",
                         pause_image=pause_image)


def pod_image_of(config: Any) -> tuple[str, str]:
    """The pods' image and pull policy on a lab that is up. Unlike resolve_inputs it needs no
    input file: `lab up` already imported the images, and a suite run on a harness without
    the air-gap folder must still be able to make pods."""
    settings: K3sSettings = config.k3s
    if settings.mode == "connected":
        return (settings.pod_image or CONNECTED_POD_IMAGE,
                settings.pod_image_pull_policy or "IfNotPresent")
    return settings.pod_image or POD_IMAGE_REF, settings.pod_image_pull_policy or "Never"


def binary_version(binary: Path, timeout: float = 20) -> str | None:
    """`k3s --version` of a harness-side binary, or None when it cannot run here (another
    architecture, not executable)."""
    try:
        done = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                              timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _VERSION_LINE.match(done.stdout.strip())
    return match.group(1) if match else None


def check_binary_version(binary: Path, expected: str) -> None:
    """An air-gapped binary must be the release the config names: flags, CNI paths and the
    CNI versions its runtime accepts are chosen from that version."""
    found = binary_version(binary)
    if found is not None and found != expected:
        raise LabError(f"k3s.binary {binary} is K3s {found}, the config says {expected}",
                       hint=f"set [k3s] version = \"{found}\", or put the {expected} binary there")
