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

from plugin.rundir import run_dir

INNER = "pyroute2.zip"


def _archive_loader() -> object:
    loader = globals().get("__loader__")
    return loader if hasattr(loader, "archive") and hasattr(loader, "get_data") else None


def _write_atomically(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)  # parallel first calls each write a whole copy; last one wins


def activate(build_id: str) -> None:
    """Puts the vendored pyroute2 on sys.path (no-op outside the archive)."""
    loader = _archive_loader()
    if loader is None:
        return  # running from a checkout: pyroute2 comes from the environment
    path = os.path.join(run_dir(), "lib", f"pyroute2-{build_id}.zip")
    if not os.path.exists(path):
        archive = loader.archive  # type: ignore[attr-defined]
        data = loader.get_data(os.path.join(archive, INNER))  # type: ignore[attr-defined]
        _write_atomically(path, data)
    if path not in sys.path:
        sys.path.append(path)
