"""Small helpers over Node that the K3s, Multus and deploy actions share: a root shell line with
a timeout, files written and copied only when changed, kubectl on the server, a deadline wait,
the same step on every node in parallel."""
from __future__ import annotations

import hashlib
import json
import shlex
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lab.api import CommandResult, LabError, Node
from lab.kube import cmdlines
from lab.nodes.ssh import CommandTimeout

POLL = 2.0   # seconds between the checks of every wait here


def sh(node: Node, script: str, *, input: str | bytes | None = None, timeout: float = 120,
       what: str = "", shared: bool = False) -> CommandResult:
    """Runs a root shell snippet on a node; raises a LabError naming the node when it fails.
    shared: over the SSH connection later `lab` processes reuse (lab.nodes.ssh), where there is
    one."""
    run = getattr(node, "run_shared", node.run) if shared else node.run
    result = run(["sh", "-c", script], input=input, timeout=timeout)
    if not result.ok:
        raise LabError(what or f"command failed (rc={result.rc})", where=node.name,
                       output=(result.stderr or result.stdout))
    return result


def write_file(node: Node, path: str, content: str, mode: int = 0o644) -> None:
    """Writes content atomically; content travels on stdin, never on a command line."""
    directory = path.rsplit("/", 1)[0] or "/"
    target, tmp = shlex.quote(path), shlex.quote(path + ".cnilab-tmp")
    script = (f"set -e; umask 077; install -d -m 0755 {shlex.quote(directory)}; "
              f"cat > {tmp}; chmod {mode:o} {tmp}; mv -f {tmp} {target}")
    sh(node, script, input=content, what=f"cannot write {path}")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def put_if_changed(node: Node, local: Path, remote: str, mode: int = 0o755) -> bool:
    """Copies only when the node's file differs (image tarballs are hundreds of MB)."""
    if node.run(["sh", "-c", cmdlines.binary_matches(sha256_of(local), remote)]).ok:
        return False
    node.put_file(local, remote, mode)
    return True


def kubectl(server: Node, *args: str, input: str | None = None, timeout: float = 120,
            what: str = "") -> CommandResult:
    result = server.run(cmdlines.kubectl(*args), input=input, timeout=timeout)
    if not result.ok:
        raise LabError(what or f"kubectl {' '.join(args[:3])} failed", where=server.name,
                       output=result.stderr or result.stdout)
    return result


# kubectl's answers when the API server is busy or restarting, not when the manifest is wrong
TRANSIENT = ("context deadline exceeded", "Client.Timeout exceeded", "TLS handshake timeout",
             "connection refused", "the server is currently unable",
             "etcdserver: request timed out", "i/o timeout", "EOF", "ServiceUnavailable",
             "Too Many Requests", "the server was unable to return a response")
APPLY_DEADLINE = 300.0


def apply(server: Node, manifests: Sequence[dict[str, Any]], what: str, *,
          deadline_s: float = APPLY_DEADLINE, poll: float = POLL) -> None:
    """`kubectl apply` of a List: one call, idempotent, nothing written to disk. No client-side
    validation: it fetches the whole OpenAPI document first, which a K3s server starved by TCG
    guests fails to serve in 32 s (our manifests are checked against the schemas in tests).
    A busy or restarting API server is asked again until deadline_s; a rejected manifest is
    an error at once."""
    doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(manifests)})
    argv = cmdlines.kubectl("apply", "--validate=false", "-f", "-")
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            result = server.run(argv, input=doc, timeout=120)
            output = result.stderr or result.stdout
        except CommandTimeout as e:
            result, output = None, f"kubectl did not answer in time ({e.what})"
        if result is not None and result.ok:
            return
        busy = result is None or any(sign in output for sign in TRANSIENT)
        if not busy or time.monotonic() + poll >= deadline:
            raise LabError(f"cannot apply {what}", where=server.name, output=output,
                           hint="the API server stayed busy for "
                                f"{deadline_s:.0f} s" if busy else "")
        time.sleep(poll)


def wait_until(check: Callable[[], str | None], timeout: float, describe: Callable[[str], LabError],
               poll: float = POLL) -> None:
    """Polls check() until it returns None; its last answer (what is missing) goes in the error.

    A probe that outlives its own timeout is a "not yet", not the end: under TCG a busy server
    can take longer than that to answer one kubectl, and the deadline is what says too late.
    The last sleep ends at the deadline, so the last answer is fresh."""
    deadline = time.monotonic() + timeout
    while True:
        started = time.monotonic()
        try:
            missing = check()
        except CommandTimeout as e:
            missing = f"a probe did not answer in time ({e.what})"
        if missing is None:
            return
        now = time.monotonic()
        if now >= deadline:
            raise describe(missing)
        # A probe is a kubectl on the node being waited for: one that took long is CPU the
        # starved node needs for itself, so probes take at most a third of its time.
        time.sleep(min(max(poll, 2 * (now - started)), max(deadline - now, 0.0)))


def parallel(nodes: Sequence[Node], fn: Callable[[Node], None]) -> None:
    """Runs fn on every node at once; raises one error naming every node that failed."""
    if not nodes:
        return
    with ThreadPoolExecutor(max_workers=min(8, len(nodes))) as pool:
        futures = {node.name: pool.submit(fn, node) for node in nodes}
    errors = [(name, f.exception()) for name, f in futures.items() if f.exception()]
    if len(errors) == 1:
        raise errors[0][1]  # type: ignore[misc]
    if errors:
        raise LabError(f"{len(errors)} nodes failed: {', '.join(n for n, _ in errors)}",
                       output="\n\n".join(str(e) for _, e in errors))
