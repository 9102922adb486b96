"""A pytest-testinfra backend for network namespaces: `netns://NSNAME`.

testinfra addresses hosts by URL and ships no namespace backend. This one runs each command
through `ip netns exec NSNAME /bin/sh -c CMD` (which also remounts /sys for the namespace, so
`host.interface(...)` reads the namespace's links). `register()` adds it to testinfra's backend
table; importing lab.drivers.pytest_plugin does that, so `testinfra.get_host("netns://…")` just
works.
"""
from __future__ import annotations

from typing import Any

from testinfra.backend import BACKENDS, base

SCHEME = "netns"


class NetnsBackend(base.BaseBackend):
    NAME = SCHEME

    def __init__(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.netns = name
        super().__init__(name, *args, **kwargs)

    def run(self, command: str, *args: str, **kwargs: Any) -> base.CommandResult:
        cmd = self.get_command(command, *args)
        out = self.run_local("ip netns exec %s /bin/sh -c %s", self.netns, cmd)
        out.command = self.encode(cmd)
        return out


def register() -> None:
    BACKENDS.setdefault(SCHEME, f"{__name__}.NetnsBackend")


register()
