"""Directories and files only this user may touch: where the harness keeps a lab's SSH keys,
kubeconfig and logs (the `[lab] state_dir`).

A state_dir another user made (or can write) would let them read the lab's private key or
swap it for theirs: root once wrote the key into a pre-made, world-readable
`id_ed25519.tmp`. So a directory is used only if it is ours and writable by no one else,
and every directory above it (on the way there and, through symlinks, where it really is)
belongs to us or root and is writable by no one else unless it is sticky like /tmp; a
missing one is made 0700. Files are created new (O_EXCL,
O_NOFOLLOW) under a name of their own, then renamed into place.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from lab.api import LabError

HINT = "point [lab] state_dir at a directory of your own that no one else can write"


def private_dir(path: Path, what: str = "state_dir") -> Path:
    """`path`, made 0700 if missing (each missing level), after the checks above."""
    path = Path(path).absolute()
    missing = []
    probe = path
    while not os.path.lexists(probe) and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for level in reversed(missing):
        try:
            level.mkdir(mode=0o700)
        except FileExistsError:
            continue  # made meanwhile (another thread's key, say): checked below like any other
        except OSError as e:
            raise LabError(f"cannot create {what} {path}: {e.strerror or e}",
                           hint=HINT) from None
    if not path.is_dir():
        raise LabError(f"{what} {path} is not a directory", hint=HINT)
    problem = _untrusted(path)
    if problem:
        raise LabError(f"refusing {what} {path}: {problem}", hint=HINT)
    return path


def _untrusted(path: Path) -> str:
    """Why `path` is not ours alone ("" when it is). A symlink on the way is fine when the
    directory holding it and the directory it leads to both pass."""
    me = os.geteuid()
    real = path.resolve()
    st = real.stat()
    if st.st_uid != me:
        return f"it belongs to uid {st.st_uid}, not to you (uid {me})"
    if st.st_mode & 0o022:
        return f"others can write it (mode {stat.S_IMODE(st.st_mode):04o})"
    for parent in {*path.parents, *real.parents}:
        pst = parent.stat()
        if pst.st_uid not in (0, me):
            return f"{parent} belongs to uid {pst.st_uid}"
        if pst.st_mode & 0o022 and not pst.st_mode & stat.S_ISVTX:
            return f"others can write {parent} (mode {stat.S_IMODE(pst.st_mode):04o})"
    return ""


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Writes `path` whole, with `mode` from the first byte, never through a link or into a
    file someone else made."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_private(path: Path) -> str:
    """The text of a file of ours (not a symlink, not someone else's)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            raise LabError(f"refusing {path}: not a file of yours", hint="remove it")
        return f.read().decode()
