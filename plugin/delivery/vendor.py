"""Private, verified copies of this build: what the helper runs and where pyroute2 comes from.

`cp` of a new dist/cnilab over the live file rewrites it in place, under every process that
reads from it: zipimport keeps the directory it read at start and would then load the new
build's bytes at the old offsets (or another build's code outright). So nothing long-lived
imports from the live file. The build writes `# cnilab build <id> sha256 <digest>` into the
shell prologue (the digest is of the zip that follows); a copy is made only from bytes that
match our own build id and that digest, into the trusted run directory, once per build:

    <run>/lib/cnilab-<build>.pyz     the whole file: the resident helper runs from it
    <run>/lib/pyroute2-<build>.zip   the vendored pyroute2, unpacked from that copy

pyroute2 travels as one stored member of the archive, not ~1,200 entries of its own:
zipimport parses an archive's whole directory in Python on first use (~60 ms for that many),
and the per-call path should only pay for the few entries it reads. In-process calls unpack
it only when something imports pyroute2 (an import hook): VERSION and config errors never
touch the run directory, so they also work for a user who may not.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import time
from typing import Any, Optional

from plugin.cni import rundir
from plugin.cni.errors import IO_FAILURE, TRY_AGAIN_LATER, CniError

INNER = "pyroute2.zip"
TOUCH_AFTER = 300.0  # users of a copy refresh its mtime this often; prune() waits far longer
MAX_FILE = 64 << 20
HEADER = b"# cnilab build "
ZIP_START = b"PK\x03\x04"


class NotThisBuild(Exception):
    """The plugin file no longer holds this build (replaced while we ran)."""


def header_line(build_id: str, archive: bytes) -> str:
    """The prologue's second line: what a copy is checked against."""
    return f"{HEADER.decode()}{build_id} sha256 {hashlib.sha256(archive).hexdigest()}"


def verify(data: bytes, build_id: str) -> None:
    """NotThisBuild unless `data` is a whole dist/cnilab of `build_id`."""
    head = data[:4096]
    start = head.find(HEADER)
    end = head.find(b"\n", start)
    fields = head[start + len(HEADER):end].split() if start >= 0 and end > start else []
    if len(fields) != 3 or fields[0].decode(errors="replace") != build_id or \
            fields[1] != b"sha256":
        raise NotThisBuild(f"not build {build_id}")
    zip_at = data.find(ZIP_START)
    if zip_at < 0 or hashlib.sha256(data[zip_at:]).hexdigest().encode() != fields[2]:
        raise NotThisBuild(f"build {build_id} damaged or half-written")


def _lib() -> str:
    return rundir.trusted_dir(os.path.join(rundir.run_dir(), "lib"))


def _existing(path: str) -> bool:
    """A copy we made earlier (a regular file of ours), refreshed for prune() when old."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if not os.path.isfile(path) or os.path.islink(path) or st.st_uid != os.geteuid():
        raise CniError(IO_FAILURE, f"refusing {path}: not a file cnilab wrote",
                       "remove it; the next call writes it again")
    if time.time() - st.st_mtime > TOUCH_AFTER:
        os.utime(path)  # in use: see prune()
    return True


def private_copy(build_id: str, plugin_fd: int, plugin_path: str) -> str:
    """<run>/lib/cnilab-<build>.pyz, written from `plugin_fd` if missing (verified)."""
    path = os.path.join(_lib(), f"cnilab-{build_id}.pyz")
    if _existing(path):
        return path
    data = os.pread(plugin_fd, MAX_FILE, 0)
    try:
        verify(data, build_id)
    except NotThisBuild as e:
        raise CniError(TRY_AGAIN_LATER, f"{plugin_path} changed while this call ran ({e}); "
                                        "try again", "a new build was copied over it: the "
                                        "next call runs the new one") from None
    rundir.write_private(path, data)
    return path


def activate(build_id: str, archive: str) -> str:
    """Puts the vendored pyroute2 of `archive` (a verified copy) on sys.path; its path."""
    import zipimport

    path = os.path.join(_lib(), f"pyroute2-{build_id}.zip")
    if not _existing(path):
        data = zipimport.zipimporter(archive).get_data(INNER)
        rundir.write_private(path, data)
    if path not in sys.path:
        sys.path.append(path)
    return path


class ImportHook:
    """Unpacks pyroute2 the first time something imports it (a meta path finder that finds
    nothing itself: once pyroute2 is on sys.path, the usual finders take over)."""

    def __init__(self, build_id: str, plugin_path: str) -> None:
        self.build_id, self.plugin_path = build_id, plugin_path
        self.done = False

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Optional[Any]:
        if self.done or name.partition(".")[0] != "pyroute2":
            return None
        self.done = True
        fd = os.open(self.plugin_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            activate(self.build_id, private_copy(self.build_id, fd, self.plugin_path))
        finally:
            os.close(fd)
        return None


def install_hook(build_id: str, plugin_path: str) -> None:
    sys.meta_path.insert(0, ImportHook(build_id, plugin_path))


def prune(build_id: str, older_than: float = 3600.0) -> None:
    """Removes other builds' copies not touched for `older_than` seconds (redeploy leftovers).

    A live helper touches its copies every few minutes (zipimport reopens an archive on each
    import, so a copy must not vanish under it); anything older belongs to nobody.
    """
    directory = os.path.join(rundir.run_dir(), "lib")
    keep = {f"pyroute2-{build_id}.zip", f"cnilab-{build_id}.pyz"}
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    cutoff = time.time() - older_than
    for name in names:
        path = os.path.join(directory, name)
        if name.startswith(("pyroute2-", "cnilab-")) and name not in keep:
            try:
                if os.lstat(path).st_mtime < cutoff:
                    os.unlink(path)
            except OSError:
                pass  # someone else pruned it, or it is not ours to remove


def touch(paths: list[str]) -> None:
    """Marks copies as in use (see prune)."""
    for path in paths:
        with contextlib.suppress(OSError):
            os.utime(path)
