"""The Python entry of dist/cnilab: a call the shell prologue could not hand to the helper
runs here, in-process, exactly as `python -m plugin` would; and a missing helper is started.

The prologue comes here when the helper of this file is not up, when it answered F / R
(could not take the call, or the config says `"resident": false`), or when X told it the
call was lost before it started. Correctness never depends on the helper: this path is the
same dispatch() with the same answers, only slower (it imports pyroute2, ~300 ms).
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Mapping
from typing import Optional

STDIN_BYTES_ENV = "CNILAB_STDIN_BYTES"  # set by the prologue after an R: the config's size


def build_id() -> Optional[str]:
    try:  # plugin/delivery/_build.py is written by plugin.delivery.build into the archive only
        from plugin.delivery._build import BUILD_ID  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        return None
    return str(BUILD_ID)


def _plugin_file() -> Optional[str]:
    loader = globals().get("__loader__")
    archive = getattr(loader, "archive", None)  # a zipimporter's: we run from the archive
    return str(archive) if archive else None


def _read_stdin(env: dict[str, str]) -> bytes:
    from plugin.delivery.handoff import MAX_STDIN, STDIN_TIMEOUT
    from plugin.delivery.streams import read_bounded

    deadline = time.monotonic() + STDIN_TIMEOUT
    size = env.pop(STDIN_BYTES_ENV, "")
    if size.isdigit():  # the config came back on the slot FIFO: exactly this much of it
        want, data = int(size), b""
        while len(data) < want:
            chunk = read_bounded(0, min(want - len(data), MAX_STDIN) - 1, deadline)
            if not chunk:
                break
            data += chunk
        return data
    return read_bounded(0, MAX_STDIN - 1, deadline)


def in_process(plugin_file: Optional[str], env: Mapping[str, str],
               stdin: bytes) -> tuple[int, str, str]:
    from plugin.cni.skel import dispatch

    ident = build_id()
    if plugin_file and ident:
        from plugin.delivery import vendor

        vendor.install_hook(ident, plugin_file)
    outcome = dispatch(env, stdin)
    return outcome.exit_code, outcome.stdout, outcome.stderr


def spawn(plugin_file: str, ident: str, env: Mapping[str, str]) -> None:
    """Starts the helper of this file, detached, from a verified private copy of it (double
    fork, new session, the file open at FILE_FD and nothing else inherited)."""
    from plugin.cni import rundir
    from plugin.cni.errors import CniError
    from plugin.delivery import handoff, resident, vendor

    if resident.helpers_of(ident, plugin_file):
        return  # up: it bounced this call (F, R, X), it did not die
    fd = os.open(plugin_file, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            copy = vendor.private_copy(ident, fd, plugin_file)
        except CniError:
            return  # replaced under us, or no run directory: this call still runs
        # A fixed environment: the helper takes nothing from the call that starts it but
        # where it lives (each call later runs with its own environment and settings).
        keep = {"PATH": resident.HELPER_PATH}
        if env.get(rundir.RUN_DIR_ENV):
            keep[rundir.RUN_DIR_ENV] = env[rundir.RUN_DIR_ENV]
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            try:
                os.setsid()
                if os.fork() == 0:
                    devnull = os.open(os.devnull, os.O_RDWR)
                    for target in (0, 1, 2):
                        os.dup2(devnull, target)
                    os.dup2(fd, handoff.FILE_FD)  # inheritable: the helper's identity
                    os.closerange(3, handoff.FILE_FD)
                    os.closerange(handoff.FILE_FD + 1, 4096)
                    os.execve(sys.executable, [sys.executable, "-I", "-S", copy, "--resident",
                                               ident], keep)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
    finally:
        os.close(fd)


def _call(argv: list[str]) -> tuple[int, str, str]:
    from plugin.delivery import handoff

    env = dict(os.environ)
    try:
        stdin = _read_stdin(env)
    except (OSError, TimeoutError) as e:
        return 1, handoff.stdin_error(e), ""
    plugin_file, ident = _plugin_file(), build_id()
    if plugin_file and ident and os.geteuid() == 0 and handoff.wanted(env, stdin):
        with contextlib.suppress(OSError):  # the next call finds it up; this one runs anyway
            spawn(argv[0] if argv and os.path.exists(argv[0]) else plugin_file, ident, env)
    return in_process(plugin_file, env, stdin)


def main(argv: list[str]) -> int:
    """argv[0] is the plugin file as the runtime ran it; a runtime passes no arguments."""
    if len(argv) > 1 and argv[1] in ("--resident", "--resident-stop"):
        from plugin.delivery import resident

        ident = build_id() or "dev"
        if argv[1] == "--resident-stop":
            return resident.stop(ident, argv[0])
        return resident.serve(argv[2] if len(argv) > 2 else ident)
    if len(argv) > 1 and argv[1] == "--forget-locks":   # `lab down`: this node goes away
        from plugin.cni.errors import CniError
        from plugin.cni.rundir import run_dir
        from plugin.crossnode import forget_locks

        try:
            forget_locks(run_dir())
        except (CniError, OSError):
            return 1
        return 0
    try:
        code, out, err = _call(argv)
    except (ImportError, SyntaxError, EOFError, ValueError, OSError) as e:  # a torn file's
        # bytes (zipimport: "can't read data"); every other OSError is answered inside
        import json

        code, err = 1, ""
        out = json.dumps({"cniVersion": "1.0.0", "code": 11, "details": type(e).__name__,
                          "msg": f"cnilab could not load its own code from "
                                 f"{argv[0] if argv else 'its file'} (replaced while it "
                                 "ran?); try again"}) + "\n"
    sys.stdout.buffer.write(out.encode("utf-8", "surrogateescape"))
    sys.stdout.flush()
    if err:
        sys.stderr.buffer.write(err.encode("utf-8", "surrogateescape"))
        sys.stderr.flush()
    return code
