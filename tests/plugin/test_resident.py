"""The resident helper behind dist/cnilab: it serves calls in the caller's namespace, and the
plugin stays correct when it is missing, stale, stopped or disabled.

Each test gets its own run directory (so its own helper) and stops that helper at the end.
"""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cnitest import (
    create_ns,
    delete_ns,
    host_local_conf,
    leases,
    links,
    run_plugin,
    unique_ns_name,
    wait_for,
)
from crossnode_lab import run_in_netns

from plugin import build, fastpath

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist") / "cnilab"
    return out, build.build(out)


@pytest.fixture
def run_dir(tmp_path, monkeypatch, built):
    path, _ = built
    d = tmp_path / "run"
    monkeypatch.setenv("CNILAB_RUN_DIR", str(d))
    try:
        yield d
    finally:
        subprocess.run([str(path), "--resident-stop"], capture_output=True, timeout=30,
                       env={"PATH": "/usr/bin:/bin", "CNILAB_RUN_DIR": str(d)})
        assert not list(d.glob("resident-*")), "the helper left files behind"


@pytest.fixture
def node_and_pods():
    names = [unique_ns_name("cnp2-", role) for role in ("node", "pa", "pb", "pc", "pd")]
    try:
        for name in names:
            create_ns(name)
        yield names[0], names[1:]
    finally:
        for name in names:
            delete_ns(name)


def socket_of(run_dir, ident):
    return run_dir / f"resident-{ident}.sock"


def pid_file_of(run_dir, ident):
    return run_dir / f"resident-{ident}.pid"  # written last, once the helper takes calls


def is_resident(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"--resident" in f.read()  # empty once it is a zombie
    except FileNotFoundError:
        return False


def plugin_env(run_dir, **extra):
    return {"CNILAB_RUN_DIR": str(run_dir), **extra}


def test_first_call_runs_itself_and_starts_the_helper_which_serves_the_next(
        built, run_dir, node_and_pods, tmp_path):
    path, ident = built
    node, (pod_a, pod_b, *_) = node_and_pods
    conf = host_local_conf(tmp_path / "ipam", name="cnp2res")
    first = run_plugin(node, "ADD", conf, netns=pod_a, plugin_argv=(str(path),),
                       extra_env=plugin_env(run_dir))
    assert first.returncode == 0, first
    sock = socket_of(run_dir, ident)
    pid_file = pid_file_of(run_dir, ident)
    assert wait_for(pid_file.exists), "the first call did not start the helper"
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    # It left the node's namespace it was started from (else it would keep it alive).
    helper = int(pid_file.read_text())
    assert os.stat(f"/proc/{helper}/ns/net").st_ino != os.stat(f"/run/netns/{node}").st_ino
    assert os.listdir(f"/proc/{helper}/root/sys/class/net") == ["lo"], "still sees the node's"

    # Ask the helper directly from a thread inside the node namespace: a reply with the
    # helper's timing proves it served the call, in the namespace we passed it. The pod's
    # namespace is made only now: the helper must see /run/netns entries made after it.
    delete_ns(pod_b)
    create_ns(pod_b)
    env = {"PATH": "/usr/bin:/bin", "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "ctr-b",
           "CNI_NETNS": f"/run/netns/{pod_b}", "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni",
           "CNILAB_RUN_DIR": str(run_dir)}
    reply = run_in_netns(node, fastpath.ask, str(sock), env, json.dumps(conf).encode())
    assert reply is not None and reply["exit_code"] == 0, reply
    assert "timing" in reply
    host_side = json.loads(reply["stdout"])["interfaces"][0]["name"]
    assert host_side in links(node), "the host veth landed outside the caller's namespace"
    assert "eth0" in links(pod_b)

    # The real binary, now over the helper: CHECK and DEL both pods.
    for pod, cid, result in ((pod_a, "ctr1", first.json),
                             (pod_b, "ctr-b", json.loads(reply["stdout"]))):
        checked = run_plugin(node, "CHECK", {**conf, "prevResult": result}, netns=pod,
                             container_id=cid, plugin_argv=(str(path),),
                             extra_env=plugin_env(run_dir))
        assert checked.returncode == 0, checked
        deleted = run_plugin(node, "DEL", conf, netns=pod, container_id=cid,
                             plugin_argv=(str(path),), extra_env=plugin_env(run_dir))
        assert deleted.returncode == 0, deleted
    assert leases(tmp_path / "ipam", "cnp2res") == []


def test_errors_come_back_through_the_helper_unchanged(built, run_dir, node_and_pods):
    path, ident = built
    node, _ = node_and_pods
    env = plugin_env(run_dir)
    run_plugin(node, "VERSION", {}, plugin_argv=(str(path),), extra_env=env)
    assert wait_for(pid_file_of(run_dir, ident).exists)
    bad = run_plugin(node, "ADD", stdin=b"{nope", netns="/run/netns/absent",
                     plugin_argv=(str(path),), extra_env=env)
    assert bad.returncode == 1 and bad.json["code"] == 6 and "Traceback" not in bad.stderr


def test_parallel_adds_over_the_helper_get_distinct_addresses(
        built, run_dir, node_and_pods, tmp_path):
    path, ident = built
    node, pods = node_and_pods
    conf = host_local_conf(tmp_path / "ipam", name="cnp2resp")
    env = plugin_env(run_dir)
    run_plugin(node, "VERSION", {}, plugin_argv=(str(path),), extra_env=env)
    assert wait_for(pid_file_of(run_dir, ident).exists)

    def add(i_pod):
        i, pod = i_pod
        return run_plugin(node, "ADD", conf, netns=pod, container_id=f"ctr{i}",
                          plugin_argv=(str(path),), extra_env=env)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(add, enumerate(pods)))
    assert all(r.returncode == 0 for r in results), [str(r) for r in results]
    ips = {r.json["ips"][0]["address"] for r in results}
    assert len(ips) == 4
    for i, pod in enumerate(pods):
        assert run_plugin(node, "DEL", conf, netns=pod, container_id=f"ctr{i}",
                          plugin_argv=(str(path),), extra_env=env).returncode == 0


def test_a_stale_socket_or_a_stopped_helper_never_breaks_a_call(
        built, run_dir, node_and_pods, tmp_path):
    path, ident = built
    node, (pod, *_) = node_and_pods
    run_dir.mkdir(mode=0o700)
    sock = socket_of(run_dir, ident)
    # A socket file nobody listens on: what a helper killed with SIGKILL leaves behind.
    import socket as socketlib
    s = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
    s.bind(str(sock))
    s.close()
    conf = host_local_conf(tmp_path / "ipam", name="cnp2stale")
    added = run_plugin(node, "ADD", conf, netns=pod, plugin_argv=(str(path),),
                       extra_env=plugin_env(run_dir))
    assert added.returncode == 0, added
    assert wait_for(lambda: pid_file_of(run_dir, ident).exists())
    subprocess.run([str(path), "--resident-stop"], check=True, timeout=30,
                   env={"PATH": "/usr/bin:/bin", "CNILAB_RUN_DIR": str(run_dir)})
    assert not sock.exists()
    deleted = run_plugin(node, "DEL", conf, netns=pod, plugin_argv=(str(path),),
                         extra_env=plugin_env(run_dir, CNILAB_RESIDENT="0"))
    assert deleted.returncode == 0 and links(pod) == ["lo"]


def test_helper_exits_when_idle_and_cleans_up(built, run_dir, node_and_pods):
    path, ident = built
    node, _ = node_and_pods
    env = plugin_env(run_dir, CNILAB_RESIDENT_IDLE="1")
    run_plugin(node, "VERSION", {}, plugin_argv=(str(path),), extra_env=env)
    assert wait_for(lambda: pid_file_of(run_dir, ident).exists())
    pid = int(pid_file_of(run_dir, ident).read_text())
    assert wait_for(lambda: not socket_of(run_dir, ident).exists(), timeout=15)
    assert wait_for(lambda: not is_resident(pid), timeout=15)


def _children_of(pid):
    found = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == str(pid) and fields[0] != "Z":
            found.append(int(stat_file.parent.name))
    return found


def test_a_killed_helper_takes_its_workers_along_and_the_next_call_starts_a_new_one(
        built, run_dir, node_and_pods, tmp_path):
    path, ident = built
    node, (pod, *_) = node_and_pods
    env = plugin_env(run_dir)
    run_plugin(node, "VERSION", {}, plugin_argv=(str(path),), extra_env=env)
    pid_file = pid_file_of(run_dir, ident)
    assert wait_for(pid_file.exists)
    helper = int(pid_file.read_text())
    assert wait_for(lambda: len(_children_of(helper)) >= 2), "no spare workers"
    workers = _children_of(helper)
    os.kill(helper, signal.SIGKILL)  # what the OOM killer does
    assert wait_for(lambda: not any(is_resident(w) for w in workers), timeout=15), \
        "workers outlived their helper"
    # The build's lock went with the helper: the next call starts a fresh one, which serves.
    conf = host_local_conf(tmp_path / "ipam", name="cnp2kill")
    added = run_plugin(node, "ADD", conf, netns=pod, plugin_argv=(str(path),), extra_env=env)
    assert added.returncode == 0, added
    assert wait_for(lambda: pid_file.exists() and int(pid_file.read_text()) != helper
                    and is_resident(int(pid_file.read_text()))), "no new helper started"
    deleted = run_plugin(node, "DEL", conf, netns=pod, plugin_argv=(str(path),), extra_env=env)
    assert deleted.returncode == 0 and links(pod) == ["lo"]


def test_a_new_build_gets_its_own_helper(built):
    _, ident = built
    assert fastpath.socket_path(ident) != fastpath.socket_path("0" * 20)
    assert ident in fastpath.socket_path(ident)


def test_resident_false_or_env_off_means_no_helper():
    conf = json.dumps({"cniVersion": "1.1.0", "resident": False}).encode()
    assert fastpath.wanted({}, conf) is False
    assert fastpath.wanted({"CNILAB_RESIDENT": "0"}, b"{}") is False
    assert fastpath.wanted({}, b'{"cniVersion": "1.1.0"}') is True
