"""testinfra reaches a namespace through netns://NAME."""
from __future__ import annotations

import secrets
import subprocess

import pytest
import testinfra

import lab.nodes.testinfra_netns  # noqa: F401  (registers netns://)


@pytest.mark.root
def test_testinfra_host_runs_inside_the_namespace():
    ns = f"cns4-{secrets.token_hex(3)}-ti"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "add", "t4probe0", "type", "veth",
                        "peer", "name", "t4probe1"], check=True)
        host = testinfra.get_host(f"netns://{ns}")
        assert host.backend.get_connection_type() == "netns"
        assert host.interface("t4probe0").exists
        assert not host.interface("lo").addresses  # lo is down in a fresh namespace
        assert host.run("echo %s", "a b").stdout == "a b\n"
        assert host.run("false").rc == 1
        assert not testinfra.get_host("local://").interface("t4probe0").exists
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
