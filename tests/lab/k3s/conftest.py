"""A real local Node for driving the K3s actions here: commands run for real on this host, as
root, in private mount and network namespaces where /etc, /opt, /usr/local and /var/lib are
overlays whose upper layers live in a tmp dir. Whatever the actions write (/usr/local/bin/k3s,
/etc/rancher/k3s, the systemd unit, CNI files) lands in that tmp dir; the host never changes.

K3s itself cannot run here (no download, no systemd as PID 1): the actions get as far as
`systemctl`, or, where a test needs kubectl answers, /usr/local/bin/k3s is a small stand-in
script that answers the few kubectl calls the actions make and records what was applied.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab.api import CommandResult

OVERLAID = ("/etc", "/opt", "/usr/local", "/var/lib")


_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _node_lock(key: str) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.Lock())


@dataclass
class OverlayNode:
    name: str
    address: str
    state_dir: str
    root: Path          # upper layers: <root>/upper/etc/..., <root>/work/...

    def _wrap(self, argv: Sequence[str]) -> list[str]:
        mounts = []
        for d in OVERLAID:
            upper, work = self.root / "upper" / d.lstrip("/"), self.root / "work" / d.lstrip("/")
            upper.mkdir(parents=True, exist_ok=True)
            work.mkdir(parents=True, exist_ok=True)
            options = f"lowerdir={d},upperdir={upper},workdir={work}"
            mounts.append(f"mount -t overlay overlay -o {shlex.quote(options)} {d}")
        script = "set -e; " + "; ".join(mounts) + '; exec "$@"'
        # Own mount and network namespaces: files land in the overlays, and link commands
        # (the uninstall's `ip link delete cni0`) can only ever see this node's empty netns.
        return ["unshare", "--mount", "--net", "--propagation", "private",
                "sh", "-c", script, "sh", *argv]

    def run(self, argv: Sequence[str], *, input: str | bytes | None = None,
            timeout: float = 60, env: dict[str, str] | None = None) -> CommandResult:
        data = input.encode() if isinstance(input, str) else input
        # one command at a time per node: two overlay mounts cannot share a workdir
        with _node_lock(self.name + str(self.root)):
            p = subprocess.run(self._wrap(argv), input=data, capture_output=True,
                               timeout=timeout, env={**os.environ, **(env or {})})
        return CommandResult(tuple(argv), p.returncode, p.stdout.decode(errors="replace"),
                             p.stderr.decode(errors="replace"))

    def put_file(self, local: Path, remote: str, mode: int = 0o755) -> None:
        script = ('set -e; mkdir -p "$(dirname "$2")"; cp "$1" "$2.tmp"; chmod "$3" "$2.tmp"; '
                  'mv -f "$2.tmp" "$2"')
        self.run(["sh", "-c", script, "sh", str(local), remote, f"{mode:o}"]).check(self.name)

    def file(self, path: str) -> Path:
        """Where a node path written by the actions really is."""
        for d in OVERLAID:
            if path.startswith(d + "/"):
                return self.root / "upper" / d.lstrip("/") / path[len(d) + 1:]
        raise ValueError(f"{path} is not under an overlaid dir")

    @property
    def testinfra_url(self) -> str:
        return "local://"


@pytest.fixture
def make_node(tmp_path, monkeypatch):
    # These nodes stand in for VMs: K3s there runs as a systemd unit. This host has no
    # systemd, and the actions ask the node (lab.kube.node_kind): answer as a VM would, or
    # they would start a supervisor whose /run and /var/log files land on the host.
    from lab.kube import k3s_install
    from lab.kube.node_kind import NodeKind

    monkeypatch.setattr(k3s_install, "kind_of", lambda node: NodeKind())
    made: list[Path] = []

    def make(name: str, address: str) -> OverlayNode:
        root = tmp_path / "nodes" / name
        root.mkdir(parents=True)
        made.append(root)
        return OverlayNode(name, address, str(root / "state"), root)

    yield make
    for root in made:  # overlay work dirs hold root-owned 000 dirs: make them removable
        subprocess.run(["chmod", "-R", "u+rwx", str(root)], check=False)
        shutil.rmtree(root, ignore_errors=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The live K3s labs run last: everything else is judged first, and what is left of the
    test budget then says whether a lab still fits (live_k3s.require_budget)."""
    items.sort(key=lambda item: (item.path.name.startswith("test_live_k3s"),
                                 LIVE_ORDER.get(item.path.name, len(LIVE_ORDER))))


# Among the live labs, the minutes-long container-node ones first (issue 21's lab, then the
# blog post's, then the release matrix), the half-hour VM labs after: a tight budget skips
# the VM labs rather than the cheap ones.
LIVE_ORDER = {name: n for n, name in enumerate((
    "test_live_k3s_podman.py", "test_live_k3s_blog_post.py", "test_live_k3s_matrix.py"))}
