"""A pytest-testinfra backend for container nodes: `nsenter://PID`.

testinfra's own podman backend goes through `podman exec` against the host's default storage,
which the lab's containers are not in (lab.nodes.providers.podman keeps its own). This one
enters every namespace of the container's init process, as the node's `run` does, and runs
`/bin/sh -c CMD` there. Importing lab.drivers.pytest_plugin registers it.
"""
from __future__ import annotations

from typing import Any

from testinfra.backend import BACKENDS, base

SCHEME = "nsenter"


class NsenterBackend(base.BaseBackend):
    NAME = SCHEME

    def __init__(self, pid: str, *args: Any, **kwargs: Any) -> None:
        if not pid.isdigit():
            raise ValueError(f"nsenter://{pid}: give the PID of the container's init")
        self.pid = pid
        super().__init__(pid, *args, **kwargs)

    def run(self, command: str, *args: str, **kwargs: Any) -> base.CommandResult:
        cmd = self.get_command(command, *args)
        out = self.run_local("nsenter --target %s --mount --uts --ipc --net --pid "
                             "-- /bin/sh -c %s", self.pid, cmd)
        out.command = self.encode(cmd)
        return out


def register() -> None:
    BACKENDS.setdefault(SCHEME, f"{__name__}.NsenterBackend")


register()
