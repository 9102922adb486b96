"""The per-call entry of dist/cnilab: hand the call to the resident helper, else run it here.

Stdlib only, and only cheap modules: this runs for every pod. `import pyroute2` alone costs
more than the whole reference ptp ADD, so the call goes over a unix socket to a resident
process that loaded it once (plugin.resident). That process serves the call in a forked child
that first enters this process's network and UTS namespaces (we pass their descriptors with
SCM_RIGHTS: the nodes of a netns lab share one filesystem and one helper, not a namespace).

Correctness never depends on the helper: when it is absent, disabled (`"resident": false` in
the config, or CNILAB_RESIDENT=0), unreachable or returns nothing, the call runs in this
process exactly as `python -m plugin` would. An absent helper is started, detached, by the
call that missed it.
"""
from __future__ import annotations

import _socket  # not `socket`: its Python layer (enum, selectors) costs ~5 ms per call
import marshal
import posix  # not `os`: os (with collections.abc, stat, posixpath) costs ~2 ms per call
import sys

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs a few ms per call
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, Optional

PROTOCOL = 1
# Long enough for an ADD that waits on the cross-node lock and IPAM; a helper stuck longer
# than this loses the call to the in-process path.
REPLY_TIMEOUT = 120.0
OFF_VALUES = ("0", "false", "no", "off")
RUN_DIR_ENV = "CNILAB_RUN_DIR"  # the same as plugin.rundir's, which imports os
DEFAULT_RUN_DIR = "/run/cnilab"


def build_id() -> Optional[str]:
    try:  # plugin/_build.py is written by plugin.build into the archive only
        from plugin._build import BUILD_ID  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        return None
    return str(BUILD_ID)


def environ() -> dict[str, str]:
    """The process environment as os.environ would decode it, without importing os."""
    return {k.decode("utf-8", "surrogateescape"): v.decode("utf-8", "surrogateescape")
            for k, v in posix.environ.items()}


def socket_path(ident: str, env: Optional[Mapping[str, str]] = None) -> str:
    """The helper's socket in the run directory `env` names (default: os.environ's)."""
    if env is None:
        import os  # the helper and tests: os is loaded there anyway

        env = os.environ
    run_dir = env.get(RUN_DIR_ENV) or DEFAULT_RUN_DIR
    return f"{run_dir.rstrip('/')}/resident-{ident}.sock"


def wanted(env: Mapping[str, str], stdin: bytes) -> bool:
    if env.get("CNILAB_RESIDENT", "").lower() in OFF_VALUES:
        return False
    if b'"resident"' not in stdin:  # skip the JSON parse unless the key is there
        return True
    import json

    try:
        return json.loads(stdin).get("resident", True) is not False
    except (ValueError, AttributeError):
        return True  # undecodable: let dispatch() give the proper error, either way


def _recv_all(sock: _socket.socket) -> bytes:
    chunks: list[bytes] = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def ask(path: str, env: Mapping[str, str], stdin: bytes) -> Optional[dict[str, Any]]:
    """The helper's reply, or None when it could not serve (connect, send or reply failed).

    Raises FileNotFoundError/ConnectionRefusedError when no helper listens at `path`.
    """
    payload = marshal.dumps({"v": PROTOCOL, "env": dict(env), "stdin": stdin})
    message = len(payload).to_bytes(4, "big") + payload
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    fds: list[int] = []
    try:
        sock.settimeout(REPLY_TIMEOUT)
        sock.connect(path)
        # thread-self: the same as self in the plugin process; right in a test's thread too
        fds = [posix.open("/proc/thread-self/ns/net", posix.O_RDONLY | posix.O_CLOEXEC),
               posix.open("/proc/thread-self/ns/uts", posix.O_RDONLY | posix.O_CLOEXEC)]
        rights = b"".join(fd.to_bytes(4, sys.byteorder) for fd in fds)  # struct-free int[]
        sent = sock.sendmsg([message], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)])
        if sent < len(message):
            sock.sendall(message[sent:])
        sock.shutdown(_socket.SHUT_WR)
        reply = marshal.loads(_recv_all(sock))
    except (FileNotFoundError, ConnectionRefusedError):
        raise
    except (OSError, EOFError, ValueError, TypeError):
        return None
    finally:
        for fd in fds:
            posix.close(fd)
        sock.close()
    if not isinstance(reply, dict) or reply.get("v") != PROTOCOL:
        return None
    return reply


def spawn(plugin_file: str, env: Mapping[str, str]) -> None:
    """Starts the helper detached (double fork, new session, no inherited descriptors)."""
    import os

    plugin_file = os.path.abspath(plugin_file)
    keep = {k: v for k, v in env.items() if k == "PATH" or k.startswith("CNILAB_")}
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.setsid()
            if os.fork() == 0:
                devnull = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(devnull, fd)
                os.closerange(3, 4096)
                os.execve(sys.executable,
                          [sys.executable, "-I", "-S", plugin_file, "--resident"], keep)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def in_process(env: Mapping[str, str], stdin: bytes) -> tuple[int, str, str]:
    from plugin import vendor
    from plugin.skel import dispatch

    vendor.activate(build_id() or "dev")
    outcome = dispatch(env, stdin)
    return outcome.exit_code, outcome.stdout, outcome.stderr


def call(plugin_file: Optional[str], env: Mapping[str, str], stdin: bytes,
         ) -> tuple[int, str, str]:
    code, out, err, _served = _call(plugin_file, env, stdin)
    return code, out, err


def _call(plugin_file: Optional[str], env: Mapping[str, str], stdin: bytes,
          ) -> tuple[int, str, str, bool]:
    """(exit code, stdout, stderr, whether the helper served the call)."""
    ident = build_id()
    if plugin_file and ident and wanted(env, stdin):
        path = socket_path(ident, env)
        try:
            reply = ask(path, env, stdin)
        except (FileNotFoundError, ConnectionRefusedError):
            try:  # noqa: SIM105 - contextlib.suppress would cost an import per call
                spawn(plugin_file, env)
            except OSError:
                pass  # no helper this time; this call still runs below
            reply = None
        if reply is not None:
            return int(reply["exit_code"]), str(reply["stdout"]), str(reply["stderr"]), True
    return (*in_process(env, stdin), False)


def _plugin_file() -> Optional[str]:
    loader = globals().get("__loader__")
    archive = getattr(loader, "archive", None)  # a zipimporter's: we run from the archive
    return str(archive) if archive else None


def main(argv: list[str]) -> int:
    """argv[0] is the plugin file; a runtime passes no arguments."""
    if len(argv) > 1 and argv[1] in ("--resident", "--resident-stop"):
        from plugin import resident

        ident = build_id() or "dev"
        if argv[1] == "--resident-stop":
            return resident.stop(ident)
        return resident.serve(ident)
    stdin = sys.stdin.buffer.read() if sys.stdin is not None else b""
    code, out, err, served = _call(_plugin_file(), environ(), stdin)
    sys.stdout.write(out)
    sys.stdout.flush()
    if err:
        sys.stderr.write(err)
        sys.stderr.flush()
    if served:
        # Nothing of ours needs tearing down (no threads, files or atexit work), and the
        # interpreter's own finalization costs a few ms the runtime would wait for.
        posix._exit(code)
    return code
