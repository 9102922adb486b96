"""Makes the vendored pyroute2 importable when running from dist/cnilab (stdlib only).

The archive carries pyroute2 as one stored member, pyroute2.zip, not as ~1,200 entries of
its own: zipimport parses an archive's whole directory in Python on first use (~60 ms for
that many entries), and the per-call path should only pay for the few entries it reads.
The calls that do need pyroute2 (in-process ones and the resident helper) copy that inner
zip once to <run dir>/lib/pyroute2-<build>.zip and import from there. The copy is keyed by
the build, so a redeploy never imports an older pyroute2.
"""
from __future__ import annotations

import os
import sys
import time

from plugin.rundir import run_dir

INNER = "pyroute2.zip"
TOUCH_AFTER = 300.0  # users of a copy refresh its mtime this often; prune() waits far longer


def _archive_loader() -> object:
    loader = globals().get("__loader__")
    return loader if hasattr(loader, "archive") and hasattr(loader, "get_data") else None


def _write_atomically(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)  # parallel first calls each write a whole copy; last one wins


def activate(build_id: str) -> str:
    """Puts the vendored pyroute2 on sys.path; returns the copy's path ("" outside the archive).
    """
    loader = _archive_loader()
    if loader is None:
        return ""  # running from a checkout: pyroute2 comes from the environment
    path = os.path.join(run_dir(), "lib", f"pyroute2-{build_id}.zip")
    try:
        if time.time() - os.stat(path).st_mtime > TOUCH_AFTER:
            os.utime(path)  # in use: see prune()
    except FileNotFoundError:
        archive = loader.archive  # type: ignore[attr-defined]
        data = loader.get_data(os.path.join(archive, INNER))  # type: ignore[attr-defined]
        _write_atomically(path, data)
    if path not in sys.path:
        sys.path.append(path)
    return path


def prune(build_id: str, older_than: float = 3600.0) -> None:
    """Removes other builds' copies not touched for `older_than` seconds (redeploy leftovers).

    A live helper touches its copy every few minutes (zipimport reopens the archive on each
    import, so a copy must not vanish under it); anything older belongs to nobody.
    """
    directory = os.path.join(run_dir(), "lib")
    keep = f"pyroute2-{build_id}.zip"
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    cutoff = time.time() - older_than
    for name in names:
        path = os.path.join(directory, name)
        if name.startswith("pyroute2-") and name != keep:
            try:
                if os.stat(path).st_mtime < cutoff:
                    os.unlink(path)
            except OSError:
                pass  # someone else pruned it, or it is not ours to remove
