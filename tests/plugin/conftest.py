"""Shared fixtures for plugin tests: throw-away network namespaces and a plugin runner.

Every test runs the plugin the way a runtime on a node would: a subprocess inside a "node"
namespace (never the host's own), talking to "pod" namespaces by path. The helpers live in
cnitest.py (import them with `from cnitest import run_plugin, ...`; importing from conftest
breaks when another conftest.py is collected first).

Stable API:
  fixtures  netns_prefix (override per module for your own prefix), make_netns(role) -> name,
            node_ns, pod_ns, ipam_dir (a tmp dir for host-local's dataDir)
  cnitest   run_plugin, PluginRun, host_local_conf, leases, links, routes, ns_run, ns_exists,
            create_ns, delete_ns, CNI_PATH, PYTHON, REPO
"""
from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest
from cnitest import (  # noqa: F401  (re-exported for modules that import from here)
    BARE_PATH,
    CNI_PATH,
    PYTHON,
    REPO,
    PluginRun,
    create_ns,
    delete_ns,
    host_local_conf,
    leases,
    links,
    ns_exists,
    ns_run,
    routes,
    run_plugin,
    stop_helper,
    unique_ns_name,
    wait_for,
)


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """dist/cnilab built once from this checkout: (its path, its build id)."""
    from plugin.delivery import build

    out = tmp_path_factory.mktemp("dist") / "cnilab"
    return out, build.build(out)


@pytest.fixture
def live_helper(built: tuple[Path, str], tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """This build's helper, up and taking shell callers, in a private run directory."""
    from plugin.delivery import handoff

    path, ident = built
    run_dir = tmp_path / "run"
    subprocess.run([str(path)], input=b"", env={"PATH": BARE_PATH, "CNI_COMMAND": "VERSION",
                   "CNILAB_RUN_DIR": str(run_dir)}, capture_output=True, timeout=60, check=True)
    pid_file = Path(handoff.base_name(str(run_dir), ident, path.stat()) + ".pid")
    try:
        assert wait_for(pid_file.exists), "the helper did not start"
        yield path, run_dir
    finally:
        stop_helper(path, run_dir)
        assert not list(run_dir.glob("resident-*")), "the helper left files behind"


@pytest.fixture
def node_and_pod() -> Iterator[tuple[str, str]]:
    """A node and a pod namespace (prefix cnp2-) for tests of the real helper."""
    node, pod = unique_ns_name("cnp2-", "hnode"), unique_ns_name("cnp2-", "hpod")
    try:
        create_ns(node)
        create_ns(pod)
        yield node, pod
    finally:
        delete_ns(node)
        delete_ns(pod)


@pytest.fixture
def netns_prefix() -> str:
    """Prefix of every namespace these fixtures make; override per module for your own."""
    return "cnp1-"


@pytest.fixture
def make_netns(netns_prefix: str) -> Iterator[Callable[..., str]]:
    made: list[str] = []

    def make(role: str = "ns") -> str:
        name = unique_ns_name(netns_prefix, role)
        made.append(name)  # before creating: a half-made namespace is still cleaned up
        create_ns(name)
        return name

    try:
        yield make
    finally:
        for name in reversed(made):
            delete_ns(name)


@pytest.fixture
def node_ns(make_netns: Callable[..., str]) -> str:
    return make_netns("node")


@pytest.fixture
def pod_ns(make_netns: Callable[..., str]) -> str:
    return make_netns("pod")


@pytest.fixture
def crossnode_lock_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Cross-node locks in a per-test directory (nothing is left in /run/cnilab), for
    crossnode_lab.program; and no CNILAB_NODE_NAME from the caller's environment."""
    import crossnode_lab

    monkeypatch.delenv("CNILAB_NODE_NAME", raising=False)
    d = tmp_path / "run"
    d.mkdir(mode=0o700)
    crossnode_lab.LOCK_DIR[:] = [str(d)]
    return str(d)


@pytest.fixture
def ipam_dir(tmp_path: Path) -> Path:
    d = tmp_path / "ipam"
    d.mkdir()
    return d
