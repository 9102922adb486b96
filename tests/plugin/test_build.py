"""dist/cnilab: one executable file that runs on a node with nothing but python3.

"A node" here: /usr/bin/python3 -I (no pyroute2 anywhere on its path), the bare PATH a
container runtime passes, and the file copied alone into an empty directory.
"""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import zipfile

import pytest
from cnitest import create_ns, delete_ns, host_local_conf, leases, links, run_plugin, unique_ns_name

from plugin.delivery import build

RUNTIME_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The file, built once, then copied (alone) where a node's CNI bin dir would be."""
    out = tmp_path_factory.mktemp("dist") / "cnilab"
    ident = build.build(out)
    bindir = tmp_path_factory.mktemp("opt-cni-bin")
    shutil.copy2(out, bindir / "cnilab")
    return bindir / "cnilab", ident


def bare_env(run_dir, **extra):
    return {"PATH": RUNTIME_PATH, "CNILAB_RUN_DIR": str(run_dir), **extra}


def test_the_system_python_has_no_pyroute2():
    # The premise of the vendoring: if this ever passes, the tests below prove less.
    done = subprocess.run(["/usr/bin/python3", "-I", "-c", "import pyroute2"],
                          capture_output=True, env={"PATH": RUNTIME_PATH})
    assert done.returncode != 0


def test_file_is_a_shell_prologue_then_a_zip_with_the_pinned_pyroute2(built):
    path, ident = built
    data = path.read_bytes()
    assert data.startswith(b"#!/bin/sh\n") and path.stat().st_mode & 0o111
    with zipfile.ZipFile(path) as outer:
        names = set(outer.namelist())
        assert {"__main__.py", "plugin/delivery/fastpath.py", "plugin/cni/skel.py",
                "plugin/crossnode/__init__.py", "plugin/delivery/_build.py",
                "pyroute2.zip"} <= names
        assert "plugin/delivery/build.py" not in names
        assert outer.read("plugin/delivery/_build.py").decode() == f'BUILD_ID = "{ident}"\n'
        inner = zipfile.ZipFile(io.BytesIO(outer.read("pyroute2.zip")))
    version = inner.read("pyroute2/config/version.py").decode()
    assert build.pinned_pyroute2_version() in version
    assert "pyroute2/iproute/linux.pyc" in inner.namelist()  # bytecode: see docs/speed.md


def test_builds_are_reproducible(built, tmp_path):
    path, ident = built
    assert build.build(tmp_path / "again") == ident
    assert (tmp_path / "again").read_bytes() == path.read_bytes()


def test_a_stamp_makes_another_build_of_the_same_source(built, tmp_path):
    _, ident = built
    stamped = build.build(tmp_path / "stamped", stamp="release 1")
    assert stamped != ident
    assert build.build(tmp_path / "again", stamp="release 1") == stamped
    assert build.build(tmp_path / "other", stamp="release 2") not in (ident, stamped)
    with zipfile.ZipFile(tmp_path / "stamped") as outer:
        assert outer.read(build.STAMP_ENTRY) == b"release 1\n"
        inner = zipfile.ZipFile(io.BytesIO(outer.read("pyroute2.zip")))
        assert "pyroute2/iproute/linux.pyc" in inner.namelist()   # still with bytecode
    done = subprocess.run([str(tmp_path / "stamped")], env=bare_env(tmp_path / "run",
                          CNI_COMMAND="VERSION"), input=b"{}", capture_output=True, timeout=30)
    assert done.returncode == 0 and b"supportedVersions" in done.stdout, done.stderr


def test_version_runs_on_bare_system_python(built, tmp_path):
    path, _ = built
    done = subprocess.run([str(path)], input=b"", capture_output=True, cwd=tmp_path,
                          env=bare_env(tmp_path / "run", CNI_COMMAND="VERSION",
                                       CNILAB_RESIDENT="0"))
    assert done.returncode == 0, done
    assert "1.1.0" in json.loads(done.stdout)["supportedVersions"]


def test_bad_input_is_a_cni_error_not_a_traceback(built, tmp_path):
    path, _ = built
    done = subprocess.run([str(path)], input=b"{not json", capture_output=True,
                          env=bare_env(tmp_path / "run", CNI_COMMAND="ADD",
                                       CNILAB_RESIDENT="0", CNI_CONTAINERID="c1",
                                       CNI_NETNS="/run/netns/nope", CNI_IFNAME="eth0",
                                       CNI_PATH="/usr/lib/cni"))
    assert done.returncode == 1 and json.loads(done.stdout)["code"] == 6
    assert b"Traceback" not in done.stderr


@pytest.mark.root
def test_add_check_del_in_process_from_the_single_file(built, tmp_path):
    """The whole lifecycle with host-local, pyroute2 coming from inside the file."""
    path, _ = built
    node, pod = unique_ns_name("cnp2-", "node"), unique_ns_name("cnp2-", "pod")
    try:
        create_ns(node)
        create_ns(pod)
        conf = host_local_conf(tmp_path / "ipam", name="cnp2build", resident=False)
        env = {"CNILAB_RUN_DIR": str(tmp_path / "run")}
        added = run_plugin(node, "ADD", conf, netns=pod, plugin_argv=(str(path),),
                           extra_env=env)
        assert added.returncode == 0, added
        assert "eth0" in links(pod) and len(leases(tmp_path / "ipam", "cnp2build")) == 1
        checked = run_plugin(node, "CHECK", {**conf, "prevResult": added.json}, netns=pod,
                             plugin_argv=(str(path),), extra_env=env)
        assert checked.returncode == 0, checked
        deleted = run_plugin(node, "DEL", conf, netns=pod, plugin_argv=(str(path),),
                             extra_env=env)
        assert deleted.returncode == 0, deleted
        assert links(pod) == ["lo"] and leases(tmp_path / "ipam", "cnp2build") == []
        # resident: false means no helper was started
        assert not list((tmp_path / "run").glob("resident-*"))
    finally:
        delete_ns(pod)
        delete_ns(node)


def test_prune_removes_only_stale_copies_of_other_builds(tmp_path, monkeypatch):
    import os
    import time

    from plugin.delivery import vendor

    monkeypatch.setenv("CNILAB_RUN_DIR", str(tmp_path))
    lib = tmp_path / "lib"
    lib.mkdir()
    old = time.time() - 7200
    for name in ("pyroute2-mine.zip", "pyroute2-stale.zip", "pyroute2-recent.zip", "other"):
        (lib / name).write_bytes(b"x")
    for name in ("pyroute2-mine.zip", "pyroute2-stale.zip", "other"):
        os.utime(lib / name, (old, old))
    vendor.prune("mine")
    assert sorted(p.name for p in lib.iterdir()) == ["other", "pyroute2-mine.zip",
                                                     "pyroute2-recent.zip"]


def _oldest_supported_python():
    import glob

    found = sorted(glob.glob("/root/.pyenv/versions/3.9*/bin/python3.9")
                   + glob.glob("/usr/bin/python3.9"))
    return found[0] if found else None


@pytest.mark.root
@pytest.mark.skipif(_oldest_supported_python() is None, reason="no python3.9 on this machine")
def test_runs_on_python_3_9(built, tmp_path):
    """The node's python3 may be as old as 3.9: sources (not the 3.11 bytecode) must run."""
    path, _ = built
    bindir = tmp_path / "py39"
    bindir.mkdir()
    (bindir / "python3").symlink_to(_oldest_supported_python())
    node, pod = unique_ns_name("cnp2-", "node"), unique_ns_name("cnp2-", "pod")
    try:
        create_ns(node)
        create_ns(pod)
        conf = host_local_conf(tmp_path / "ipam", name="cnp2py39", resident=False)
        env = {"CNILAB_RUN_DIR": str(tmp_path / "run"), "PATH": f"{bindir}:{RUNTIME_PATH}"}
        for command in ("ADD", "DEL"):
            done = run_plugin(node, command, conf, netns=pod, plugin_argv=(str(path),),
                              extra_env=env)
            assert done.returncode == 0, done
        assert links(pod) == ["lo"]
    finally:
        delete_ns(pod)
        delete_ns(node)
