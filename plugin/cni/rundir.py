"""Where cnilab keeps node-local runtime files (locks, the resident helper, the unpacked
pyroute2), and why it may trust them.

Whoever can write that directory can fake a helper's answers, feed the plugin a config, or
plant code it imports as root. So one rule, the same here and in the shell prologue
(plugin/delivery/prologue.py, which checks the part builtins can see):

- the path is absolute, with no `.` or `..` component;
- no component of it is a symbolic link, every one is a directory owned by root;
- the run directory is writable by no one but root (no group or other write bit), and so
  is every directory above it unless it is sticky like /tmp (then no one else can rename
  ours away).

Checked on every use here; the resident helper checks it once a second and stops when it
fails (the prologue cannot read mode bits with builtins; it hands calls only to a live
helper). A missing directory is made 0700. Anything else is refused with a CNI error that
says why.
"""
from __future__ import annotations

import contextlib
import errno
import os
import stat

from plugin.cni.errors import IO_FAILURE, CniError

RUN_DIR_ENV = "CNILAB_RUN_DIR"
DEFAULT_RUN_DIR = "/run/cnilab"


def run_dir_name() -> str:
    """/run/cnilab unless CNILAB_RUN_DIR says otherwise (tests use a private one); unchecked."""
    return (os.environ.get(RUN_DIR_ENV) or DEFAULT_RUN_DIR).rstrip("/") or "/"


def run_dir() -> str:
    """The run directory, made if missing, checked as the module docstring says."""
    return trusted_dir(run_dir_name())


def trusted_dir(path: str) -> str:
    """`path` (made 0700 if missing) once it and its parents pass the checks; CniError(5)."""
    try:
        problem = _form_problem(path)
        if not problem:
            _make(path)
            problem = untrusted_because(path)
    except OSError as e:
        problem = f"{e.strerror or e}"
        if os.geteuid() == 0:
            raise CniError(IO_FAILURE, f"cannot use the run directory {path}: {problem}",
                           f"set {RUN_DIR_ENV} to a directory only root can write") from None
    if problem and os.geteuid() != 0:
        raise CniError(IO_FAILURE, "cnilab must run as root (it configures network "
                                   "namespaces: CAP_NET_ADMIN)",
                       f"running as uid {os.geteuid()}; the run directory {path}: {problem}")
    if problem:
        raise CniError(IO_FAILURE, f"refusing the run directory {path}: {problem}",
                       f"it holds the plugin's locks and helper: make it a directory only "
                       f"root can write (or unset {RUN_DIR_ENV} for {DEFAULT_RUN_DIR})")
    return path


def _make(path: str) -> None:
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        return
    except FileNotFoundError:
        parent = os.path.dirname(path)
        if parent == path:
            raise
        _make(parent)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)


def _form_problem(path: str) -> str:
    parts = path.split("/")
    if not path.startswith("/") or "." in parts or ".." in parts:
        return "it is not an absolute path without . or .. components"
    return ""


def untrusted_because(path: str) -> str:
    """Why `path` cannot be trusted ("" when it can): see the module docstring."""
    if _form_problem(path):
        return _form_problem(path)
    parts = [p for p in path.split("/") if p]
    here = "/"
    for depth, part in enumerate(["", *parts]):
        here = os.path.join(here, part)
        last = depth == len(parts)
        st = os.lstat(here)
        if stat.S_ISLNK(st.st_mode):
            return f"{here} is a symbolic link"
        if not stat.S_ISDIR(st.st_mode):
            return f"{here} is not a directory"
        if st.st_uid != 0:
            return f"{here} belongs to uid {st.st_uid}, not root"
        if st.st_mode & 0o022 and (last or not st.st_mode & stat.S_ISVTX):
            return f"others can write {here} (mode {stat.S_IMODE(st.st_mode):04o})"
    return ""


def open_private(path: str, flags: int = os.O_WRONLY) -> int:
    """A new file only we can read, in a trusted directory: never an existing one, never
    through a symlink (O_EXCL | O_NOFOLLOW); FileExistsError if the name is taken."""
    return os.open(path, flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


def write_private(path: str, data: bytes) -> None:
    """Writes `path` whole or not at all (a private temporary, then rename)."""
    tmp = f"{path}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    fd = open_private(tmp)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise
        raise
