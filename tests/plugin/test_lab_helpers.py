"""`lab down` and the plugin's resident helpers (issue 11, item 9): each lab's plugin copy has
a helper of its own; `lab down` stops that one, found where the lab's plugin made it (the
run directory of the environment the lab ran it with, whatever CNILAB_RUN_DIR the shell
has), and no other lab's."""
from __future__ import annotations

import os
import secrets
import textwrap
from pathlib import Path

import pytest
from cnitest import wait_for

from lab.cli import main
from lab.cluster.session import open_lab
from lab.nodes.providers.netns import lab_namespaces
from plugin.delivery import build, handoff

pytestmark = pytest.mark.root


def helpers_of(plugin: str) -> list[int]:
    """The helper (and its workers) holding `plugin` open as the file they serve."""
    found = []
    for fd in Path("/proc").glob(f"[0-9]*/fd/{handoff.FILE_FD}"):
        try:
            if os.path.samefile(fd, plugin):
                found.append(int(fd.parts[2]))
        except OSError:
            continue
    return found


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist") / "cnilab"
    build.build(out)
    return out


def lab_config(tmp_path: Path, name: str, plugin: Path) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(textwrap.dedent(f"""
        [lab]
        name = "{name}"
        state_dir = "{tmp_path / name}"
        [[nodes]]
        name = "node1"
        role = "server"
        [plugin]
        path = "{plugin}"
        type = "cnilab"
    """))
    return path


def test_lab_down_stops_its_own_helpers_where_its_plugin_made_them_and_no_others(
        tmp_path, dist, monkeypatch):
    labs = ["t5" + secrets.token_hex(3) for _ in range(2)]
    configs = [lab_config(tmp_path, name, dist) for name in labs]
    try:
        helpers = []
        for config in configs:
            assert main(["-c", str(config), "up"]) == 0
            with open_lab(config) as lab:
                lab.cluster().create_pod("p1", "node1")  # ADD through the lab's runtime
                plugin = f"{lab.nodes()[0].state_dir}/bin/cnilab"
            assert wait_for(lambda plugin=plugin: helpers_of(plugin)), "no helper started"
            helpers.append(helpers_of(plugin))
        # A shell that has CNILAB_RUN_DIR set, unlike the lab's plugin: down must not care.
        monkeypatch.setenv("CNILAB_RUN_DIR", str(tmp_path / "elsewhere"))
        assert main(["-c", str(configs[0]), "down"]) == 0
        assert wait_for(lambda: not any(handoff.alive(pid) for pid in helpers[0]), 15), \
            "lab down left its helper running"
        assert all(handoff.alive(pid) for pid in helpers[1]), \
            "lab down stopped another lab's helper"
    finally:
        monkeypatch.delenv("CNILAB_RUN_DIR", raising=False)
        for config in configs:
            main(["-c", str(config), "down"])
    assert all(lab_namespaces(name) == [] for name in labs)
