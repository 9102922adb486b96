"""A lab node that is a container: commands enter its namespaces with nsenter, files go in
through /proc/<pid>/root.

`podman exec` costs 0.2-0.5 s a call here (it loads podman's state, asks the runtime); nsenter
costs a fork. A command also joins the container's cgroups before it starts, as `podman exec`
would put it there: K3s, started this way, must find itself inside the node's cgroup (its
kubelet makes the pod cgroups below its own), never in the caller's.
"""
from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lab.api import CommandResult, LabError
from lab.nodes.local_run import run_local, text

CGROUP_ROOT = Path("/sys/fs/cgroup")
PUT_TIMEOUT = 600          # the K3s binary and image tarballs are hundreds of MB
NAMESPACES = ("--mount", "--uts", "--ipc", "--net", "--pid", "--cgroup")


def nsenter_argv(pid: int, argv: Sequence[str]) -> list[str]:
    """Into every namespace of the container's init, then argv. Entering its mount namespace
    puts the command at the container's root (a --wd=/ would be the host's /, opened before)."""
    return ["nsenter", f"--target={pid}", *NAMESPACES, "--", *argv]


def cgroup_dirs(pid: int, proc: Path = Path("/proc"),
                mounts: Path = Path("/proc/self/mountinfo")) -> list[Path]:
    """The host-side cgroup directories of process pid, one per hierarchy (v1 controllers,
    the v2 unified tree), found from /proc/<pid>/cgroup and this host's cgroup mounts."""
    hierarchies: dict[str, Path] = {}
    for line in mounts.read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or not tail:
            continue
        if tail[0] == "cgroup2":
            hierarchies.setdefault("", Path(fields[4]))
        elif tail[0] == "cgroup" and len(tail) >= 3:
            for option in tail[2].split(","):
                if option in ("rw", "ro", "relatime", "noatime", "nosuid", "nodev", "noexec"):
                    continue
                hierarchies.setdefault(option, Path(fields[4]))
    found = []
    for line in (proc / str(pid) / "cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        names = controllers.split(",") if controllers else [""]
        mount = next((hierarchies[n] for n in names if n in hierarchies), None)
        if mount is not None:
            found.append(mount / path.lstrip("/"))
    return found


def join_cgroups(dirs: Sequence[Path]) -> None:
    """Moves the calling process into each cgroup (run in the child before it execs)."""
    for directory in dirs:
        with contextlib.suppress(OSError):   # a hierarchy the runtime did not make one in
            (directory / "cgroup.procs").write_text("0")


@dataclass
class ContainerNode:
    """A node that is a container, reached through its init's PID (podman's view is read once
    per `lab` process by the provider: a restarted container is a new node object)."""

    name: str
    address: str
    state_dir: str
    container: str
    pid: int

    # Commands are local subprocesses: with no input given they read our own stdin.
    inherits_stdin = True

    def run(self, argv: Sequence[str], *, input: str | bytes | None = None,
            timeout: float = 60,
            env: dict[str, str] | None = None) -> CommandResult:
        try:
            dirs = cgroup_dirs(self.pid)
        except OSError:
            return CommandResult(tuple(argv), 125, "",
                                 f"node {self.name}: its container (pid {self.pid}) is not "
                                 "running; `lab status` shows it, `lab up` starts it again")
        return run_local(nsenter_argv(self.pid, argv), argv, where=self.name, input=input,
                         timeout=timeout, env=env, preexec_fn=lambda: join_cgroups(dirs))

    def put_file(self, local: Path, remote: str, mode: int = 0o755) -> None:
        """Streams the file into the node through `cat` inside it, not by writing under
        /proc/<pid>/root: an absolute symlink in the node (Debian's /var/run -> /run) would
        resolve against the host's root from out here. Atomic: a plugin being executed is
        never seen half-written."""
        script = ('set -e; mkdir -p "$(dirname "$1")"; t="$(dirname "$1")/.$(basename "$1")'
                  '.cnilab-tmp"; cat > "$t"; chmod "$2" "$t"; mv -f "$t" "$1"')
        argv = ["sh", "-c", script, "sh", remote, f"{mode:o}"]
        dirs = cgroup_dirs(self.pid)
        with local.open("rb") as source:
            done = subprocess.run(nsenter_argv(self.pid, argv), stdin=source,
                                  capture_output=True, timeout=PUT_TIMEOUT, check=False,
                                  preexec_fn=lambda: join_cgroups(dirs))
        if done.returncode != 0:
            raise LabError(f"cannot copy {local} to {remote}", where=self.name,
                           output=text(done.stderr))

    def shell_argv(self) -> list[str]:
        """An interactive login shell in the node (`lab ssh NODE`)."""
        return nsenter_argv(self.pid, ["/bin/bash", "-l"])

    @property
    def testinfra_url(self) -> str:
        return f"nsenter://{self.pid}"
