"""Base images: the catalog of official cloud images, downloads, and what `image = …` means.

`image` in `[libvirt]` may be:
- "cnilab-debian-12": the image `lab image build` makes (kernel booted directly);
- a catalog name ("debian-12", "ubuntu-24.04"): an official cloud image at a pinned URL,
  downloaded once (progress, resume, checksum) into the image cache;
- a local path or file:// URL (qcow2 or raw), or a built image's directory;
- an https:// URL with its checksum as a fragment: "https://…/x.qcow2#sha256=<hex>".
"""
from __future__ import annotations

import hashlib
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lab.api import LabError
from lab.nodes.providers.libvirt import image_build

Report = Callable[[str], None]


@dataclass(frozen=True)
class CatalogEntry:
    url: str
    digest: str          # "<algorithm>:<hex>": what the publisher's checksum file lists
    note: str = ""


# Pinned releases. Debian publishes SHA512SUMS only (no SHA-256), Ubuntu SHA256SUMS. The values
# were taken from public references and could not be re-checked against the publishers' files
# from this machine (no internet); docs/vms.md says how to refresh them.
CATALOG: dict[str, CatalogEntry] = {
    "debian-12": CatalogEntry(
        url="https://cloud.debian.org/images/cloud/bookworm/20250210-2019/"
            "debian-12-genericcloud-amd64-20250210-2019.qcow2",
        digest="sha512:a58d86525d75fd8e139a2302531ce5d2ab75ef0273cfe78f9d53aada4b23efd4"
               "5f8433b4806fa4570cfe981c8fae26f5e5e855cbd66ba2198862f28125fd2d45",
        note="Debian 12 genericcloud, boots with its own GRUB"),
    "ubuntu-24.04": CatalogEntry(
        url="https://cloud-images.ubuntu.com/noble/20250805/noble-server-cloudimg-amd64.img",
        digest="sha256:834af9cd766d1fd86eca156db7dff34c3713fbbc7f5507a3269be2a72d2d1820",
        note="Ubuntu 24.04 server cloud image (qcow2 despite the .img name)"),
}

BUILT_CMDLINE = image_build.KERNEL_CMDLINE
_QCOW2_MAGIC = b"QFI\xfb"


@dataclass(frozen=True)
class BaseImage:
    """A disk every node's overlay sits on, plus a kernel when it boots without a loader."""

    disk: Path
    format: str                  # "qcow2" or "raw"
    source: str                  # what the config said
    kernel: Path | None = None
    initrd: Path | None = None
    cmdline: str = ""


def disk_format(path: Path) -> str:
    with path.open("rb") as f:
        return "qcow2" if f.read(4) == _QCOW2_MAGIC else "raw"


def _from_built(built: image_build.BuiltImage, source: str) -> BaseImage:
    return BaseImage(disk=built.disk, format="qcow2", source=source, kernel=built.kernel,
                     initrd=built.initrd, cmdline=BUILT_CMDLINE)


def _local(path: Path, source: str) -> BaseImage:
    if path.is_dir():
        built = image_build.BuiltImage(path)
        if not built.is_complete():
            raise LabError(f"image directory {path} is not a finished `lab image build` output",
                           hint="it needs disk.qcow2, vmlinuz, initrd.img and manifest.json")
        return _from_built(built, source)
    if not path.is_file():
        raise LabError(f"image {source!r}: no such file {path}",
                       hint='use "cnilab-debian-12", "debian-12", "ubuntu-24.04" or a path')
    return BaseImage(disk=path.resolve(), format=disk_format(path), source=source)


def split_digest(digest: str) -> tuple[str, str]:
    algorithm, _, value = digest.partition(":")
    if algorithm not in ("sha256", "sha512") or not value:
        raise LabError(f"checksum {digest!r} is not '<sha256|sha512>:<hex>'")
    return algorithm, value.lower()


def resolve_image(spec: str, cache_dir: Path, *, build_if_missing: bool = False,
                  report: Report | None = None) -> BaseImage:
    """Turns the config's `image` into a local base image, downloading or building it once."""
    say = report or (lambda _m: None)
    if spec == image_build.BUILT_IMAGE_NAME:
        built = image_build.find_built(cache_dir)
        if built is None:
            if not build_if_missing:
                raise LabError(f"image {spec!r} is not built yet (looked in {cache_dir})",
                               hint="run `lab image build` (about 1.5-3 minutes)")
            built, _ = image_build.build_image(cache_dir, report=say)
        return _from_built(built, spec)
    if spec in CATALOG:
        entry = CATALOG[spec]
        name = entry.url.rsplit("/", 1)[-1]
        path = download(entry.url, cache_dir / name, entry.digest, report=say)
        return BaseImage(disk=path, format=disk_format(path), source=spec)
    parsed = urllib.parse.urlparse(spec)
    if parsed.scheme == "file":
        return _local(Path(urllib.parse.unquote(parsed.path)), spec)
    if parsed.scheme in ("http", "https"):
        fragment = urllib.parse.parse_qs(parsed.fragment)
        digests = [f"{alg}:{fragment[alg][0]}" for alg in ("sha256", "sha512") if alg in fragment]
        if not digests:
            raise LabError(f"image URL {spec!r} has no checksum to verify it against",
                           hint="append '#sha256=<hex>' (or '#sha512=<hex>') to the URL")
        url = urllib.parse.urlunparse(parsed._replace(fragment=""))
        path = download(url, cache_dir / Path(parsed.path).name, digests[0], report=say)
        return BaseImage(disk=path, format=disk_format(path), source=spec)
    return _local(Path(spec).expanduser(), spec)


def _hash_file(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest: Path, digest: str, *, report: Report | None = None,
             timeout: float = 30) -> Path:
    """Fetches url to dest unless dest is there and verified. A partial download (dest.part)
    resumes with an HTTP Range request; the file is only renamed into place once its checksum
    matches."""
    say = report or (lambda _m: None)
    algorithm, expected = split_digest(digest)
    if dest.is_file():
        return dest      # verified before it was renamed into place
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:     # the part file is already complete
            response = None
        else:
            raise LabError(f"download of {url} failed: HTTP {e.code}",
                           hint="check the URL, or build an image offline: `lab image build`"
                           ) from None
    except (urllib.error.URLError, OSError) as e:
        raise LabError(f"cannot download {url}: {getattr(e, 'reason', e)}",
                       hint="no network? build an image offline with `lab image build`, "
                            "or point image at a local file") from None
    if response is not None:
        with response:
            resumed = have > 0 and response.status == 206
            if not resumed:
                have = 0       # the server ignored the Range: start over
            total = int(response.headers.get("Content-Length", "0")) + have
            say(f"downloading {url}" + (f" (resuming at {have >> 20} MiB)" if resumed else ""))
            last = 0.0
            with part.open("ab" if resumed else "wb") as out:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    have += len(chunk)
                    now = time.monotonic()
                    if now - last > 2 or have == total:
                        last = now
                        pct = f"{100 * have // total}%" if total else ""
                        say(f"  {have >> 20} MiB {pct}".rstrip())
    actual = _hash_file(part, algorithm)
    if actual != expected:
        part.unlink()
        raise LabError(f"checksum mismatch for {url}",
                       output=f"expected {algorithm} {expected}\nactual   {algorithm} {actual}",
                       hint="the download was removed; retry, or update the pinned checksum")
    os.replace(part, dest)
    dest.chmod(0o644)
    return dest


def cached_images(cache_dir: Path) -> list[tuple[str, Path]]:
    """(name, path) of every image in the cache: built images and downloads."""
    found: list[tuple[str, Path]] = []
    for built in sorted(cache_dir.glob(f"{image_build.BUILT_IMAGE_NAME}-*")):
        if built.is_dir() and image_build.BuiltImage(built).is_complete():
            found.append((built.name, built))
    by_file = {e.url.rsplit("/", 1)[-1]: name for name, e in CATALOG.items()}
    for f in sorted(cache_dir.iterdir() if cache_dir.is_dir() else []):
        if f.is_file() and not f.name.startswith(".") and not f.name.endswith((".part", ".log")):
            found.append((by_file.get(f.name, f.name), f))
    return found
