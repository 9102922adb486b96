"""The resident helper behind dist/cnilab: it serves calls as the caller sees the world, runs
only its own build's code, one helper per installed file, and the plugin stays correct when
it is missing, stopped, killed or disabled.

Each test gets its own run directory (so its own helper) and stops that helper at the end.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cnitest import (
    BARE_PATH,
    CNI_PATH,
    REPO,
    children_of,
    create_ns,
    delete_ns,
    host_local_conf,
    leases,
    links,
    run_plugin,
    stop_helper,
    unique_ns_name,
    wait_for,
)

from plugin.delivery import build, handoff, resident

pytestmark = pytest.mark.root



@pytest.fixture
def run_dir(tmp_path, built):
    d = tmp_path / "run"
    stops = [built[0]]
    try:
        yield d, stops
    finally:
        for path in stops:
            stop_helper(path, d)
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


def pid_file_of(run_dir: Path, ident: str, plugin: Path) -> Path:
    return Path(handoff.base_name(str(run_dir), ident, plugin.stat()) + ".pid")


def helper_of(run_dir: Path, ident: str, plugin: Path, timeout: float = 30) -> int:
    pid_file = pid_file_of(run_dir, ident, plugin)
    assert wait_for(pid_file.exists, timeout), "no helper started"
    return int(pid_file.read_text())


def is_resident(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"--resident" in f.read()  # empty once it is a zombie
    except FileNotFoundError:
        return False


def environ_of(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def call(plugin: Path, run_dir: Path, command: str, stdin: bytes = b"", cwd=None,
         **env: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(plugin)], input=stdin, capture_output=True, timeout=90,
                          cwd=cwd, env={"PATH": BARE_PATH, "CNI_COMMAND": command,
                                        "CNILAB_RUN_DIR": str(run_dir), **env})


def served_by_a_worker(run, helper: int) -> bool:
    """The log prefix names the process that ran dispatch(): one of the helper's workers."""
    prefix = run.stderr.split("cnilab[", 1)[1].split("]", 1)[0]
    stat = Path(f"/proc/{prefix}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[1] == str(helper)


def test_first_call_runs_itself_and_starts_the_helper_which_serves_the_next(
        built, run_dir, node_and_pods, tmp_path):
    path, ident = built
    d, _ = run_dir
    node, (pod_a, pod_b, *_) = node_and_pods
    conf = host_local_conf(tmp_path / "ipam", name="cnp2res")
    env = {"CNILAB_RUN_DIR": str(d)}
    first = run_plugin(node, "ADD", conf, netns=pod_a, plugin_argv=(str(path),),
                       extra_env=env)
    assert first.returncode == 0, first
    helper = helper_of(d, ident, path)
    # It left the node's namespace it was started from (else it would keep it alive).
    assert os.stat(f"/proc/{helper}/ns/net").st_ino != os.stat(f"/run/netns/{node}").st_ino
    assert os.listdir(f"/proc/{helper}/root/sys/class/net") == ["lo"], "still sees the node's"
    assert stat_mode(d) == 0o700
    # A pod namespace made only now: the worker must see /run/netns entries made after it.
    delete_ns(pod_b)
    create_ns(pod_b)
    second = run_plugin(node, "ADD", conf, netns=pod_b, container_id="ctr-b",
                        plugin_argv=(str(path),), extra_env=env)
    assert second.returncode == 0, second
    assert served_by_a_worker(second, helper), second.stderr
    assert second.json["interfaces"][0]["name"] in links(node), "the veth went elsewhere"
    assert "eth0" in links(pod_b)
    for pod, cid, result in ((pod_a, "ctr1", first.json), (pod_b, "ctr-b", second.json)):
        checked = run_plugin(node, "CHECK", {**conf, "prevResult": result}, netns=pod,
                             container_id=cid, plugin_argv=(str(path),), extra_env=env)
        assert checked.returncode == 0, checked
        deleted = run_plugin(node, "DEL", conf, netns=pod, container_id=cid,
                             plugin_argv=(str(path),), extra_env=env)
        assert deleted.returncode == 0, deleted
    assert leases(tmp_path / "ipam", "cnp2res") == []


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


def test_parallel_adds_over_the_helper_get_distinct_addresses(
        built, run_dir, node_and_pods, tmp_path):
    path, ident = built
    d, _ = run_dir
    node, pods = node_and_pods
    conf = host_local_conf(tmp_path / "ipam", name="cnp2resp")
    env = {"CNILAB_RUN_DIR": str(d)}
    call(path, d, "VERSION")
    helper_of(d, ident, path)

    def add(i_pod):
        i, pod = i_pod
        return run_plugin(node, "ADD", conf, netns=pod, container_id=f"ctr{i}",
                          plugin_argv=(str(path),), extra_env=env)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(add, enumerate(pods)))
    assert all(r.returncode == 0 for r in results), [str(r) for r in results]
    assert len({r.json["ips"][0]["address"] for r in results}) == 4
    for i, pod in enumerate(pods):
        assert run_plugin(node, "DEL", conf, netns=pod, container_id=f"ctr{i}",
                          plugin_argv=(str(path),), extra_env=env).returncode == 0
    assert leases(tmp_path / "ipam", "cnp2resp") == []


def test_helper_exits_when_idle_and_cleans_up(built, run_dir):
    path, ident = built
    d, _ = run_dir
    call(path, d, "VERSION", CNILAB_RESIDENT_IDLE="1")  # in-process: starts the helper
    helper = helper_of(d, ident, path)
    assert is_resident(helper)
    assert b"CNILAB_RESIDENT_IDLE" not in environ_of(helper), "it took the first call's"
    assert wait_for(lambda: served_version(path, d) == "plain")
    time.sleep(2)
    assert is_resident(helper), "it idled out on the first call's setting"
    call(path, d, "VERSION", CNILAB_RESIDENT_IDLE="1")  # served: the setting of that call
    assert wait_for(lambda: not is_resident(helper), timeout=20)
    assert wait_for(lambda: not list(d.glob("resident-*")), timeout=5)


def test_a_killed_helper_takes_its_workers_along_and_the_next_call_starts_a_new_one(
        built, run_dir, node_and_pods, tmp_path):
    path, ident = built
    d, _ = run_dir
    node, (pod, *_) = node_and_pods
    call(path, d, "VERSION")
    helper = helper_of(d, ident, path)
    assert wait_for(lambda: len(children_of(helper)) >= 2), "no spare workers"
    workers = children_of(helper)
    ticker = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
              if f"CNILAB_TICK_FOR={helper}".encode() in environ_of(pid)]
    assert ticker, "no ticker"
    os.kill(helper, signal.SIGKILL)  # what the OOM killer does
    assert wait_for(lambda: not any(is_resident(w) for w in workers), timeout=15), \
        "workers outlived their helper"
    assert wait_for(lambda: not any(environ_of(pid) for pid in ticker), timeout=5), \
        "the ticker outlived its helper"
    conf = host_local_conf(tmp_path / "ipam", name="cnp2kill")
    env = {"CNILAB_RUN_DIR": str(d)}
    added = run_plugin(node, "ADD", conf, netns=pod, plugin_argv=(str(path),), extra_env=env)
    assert added.returncode == 0, added
    pid_file = pid_file_of(d, ident, path)
    assert wait_for(lambda: pid_file.exists() and int(pid_file.read_text()) != helper
                    and is_resident(int(pid_file.read_text()))), "no new helper started"
    assert not list(d.glob(f"*.{helper}.d")), "the dead helper's directory is still there"
    deleted = run_plugin(node, "DEL", conf, netns=pod, plugin_argv=(str(path),), extra_env=env)
    assert deleted.returncode == 0 and links(pod) == ["lo"]



def test_a_frozen_worker_of_a_killed_helper_leaves_the_next_helper_free_to_start(
        built, run_dir):
    """Found by the long chaos run: a worker that outlived its helper held the helper lock,
    so for minutes no helper could start and every call fell back to Python."""
    path, ident = built
    d, _ = run_dir
    call(path, d, "VERSION")
    first = helper_of(d, ident, path)
    assert wait_for(lambda: len(children_of(first)) >= 2), "no spare workers"
    frozen = children_of(first)
    try:
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        os.kill(first, signal.SIGKILL)
        assert wait_for(lambda: not is_resident(first), timeout=10)
        # Its workers are frozen: their death signal waits. The next call's helper starts.
        assert call(path, d, "VERSION").returncode == 0
        pid_file = pid_file_of(d, ident, path)
        assert wait_for(lambda: pid_file.exists() and int(pid_file.read_text()) != first
                        and is_resident(int(pid_file.read_text())), timeout=20), \
            "no new helper while the old one's workers live on"
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        assert wait_for(lambda: not any(is_resident(w) for w in frozen), timeout=15), \
            "workers outlived their helper"
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                os.kill(pid, signal.SIGCONT)


# -- item 2 of issue 11: a `cp` over the live file --------------------------------------------

def live_copy(plain, run_dir, tmp_path):
    """The plain build at a CNI bin path of the test's own, its helper stopped at the end."""
    live = tmp_path / "bin" / "cnilab"
    live.parent.mkdir()
    run_dir[1].append(live)
    shutil.copy2(plain, live)
    return live


@pytest.fixture(scope="module")
def marked_build(tmp_path_factory):
    """A second build that says so: its VERSION answer carries "build": "marked"."""
    tree = tmp_path_factory.mktemp("marked") / "plugin"
    shutil.copytree(REPO / "plugin", tree, ignore=shutil.ignore_patterns("__pycache__"))
    skel = tree / "cni" / "skel.py"
    source = skel.read_text()
    old = '"supportedVersions": list(SUPPORTED_VERSIONS)}'
    assert old in source
    skel.write_text(source.replace(old, old[:-1] + ', "build": "marked"}'))
    out = tmp_path_factory.mktemp("dist-marked") / "cnilab"
    saved = build.PLUGIN_DIR
    build.PLUGIN_DIR = tree
    try:
        return out, build.build(out)
    finally:
        build.PLUGIN_DIR = saved


def test_a_helper_never_runs_another_builds_code_after_a_cp_over_the_live_file(
        built, marked_build, run_dir, tmp_path, monkeypatch):
    (plain, plain_id), (marked, marked_id) = built, marked_build
    d, live = run_dir[0], live_copy(plain, run_dir, tmp_path)

    def answers(n: int) -> set:
        found = set()
        for _ in range(n):
            done = call(live, d, "VERSION")
            assert done.returncode == 0 and b"Traceback" not in done.stderr, done
            found.add(json.loads(done.stdout).get("build", "plain"))
        return found

    for source, ident, name in ((plain, plain_id, "plain"), (marked, marked_id, "marked"),
                                (plain, plain_id, "plain"), (marked, marked_id, "marked")):
        shutil.copyfile(source, live)  # in place: same inode, new bytes under every reader
        assert answers(3) == {name}, f"after copying {name} over the file"
        helper = helper_of(d, ident, live)
        assert wait_for(lambda name=name: served_version(live, d) == name), \
            "its helper never served"
        assert is_resident(helper)
        assert answers(10) == {name}, f"the helper of {name} served another build's code"
    monkeypatch.setenv("CNILAB_RUN_DIR", str(d))
    pids = [int(pid_file_of(d, ident, live).read_text()) for ident in (plain_id, marked_id)]
    assert all(is_resident(pid) for pid in pids) and pids[0] != pids[1]
    for ident in (plain_id, marked_id):  # two helpers of one file: each build stops its own
        assert resident.stop(ident, str(live)) == 0
    assert not any(is_resident(pid) for pid in pids)


def served_version(live: Path, d: Path) -> str:
    trace = live.parent / "trace"
    done = subprocess.run(["strace", "-f", "-qq", "-e", "trace=execve", "-o", str(trace),
                           str(live)], input=b"", capture_output=True, timeout=30,
                          env={"PATH": BARE_PATH, "CNI_COMMAND": "VERSION",
                               "CNILAB_RUN_DIR": str(d)})
    if "python3" in trace.read_text():
        return "in-process"
    return str(json.loads(done.stdout).get("build", "plain"))


# -- item 9: one helper per installed file; the pool shrinks after a burst ---------------------

def test_each_installed_file_has_its_own_helper_and_stops_only_its_own(built, run_dir,
                                                                       tmp_path):
    path, ident = built
    d, stops = run_dir
    files = []
    for lab in ("lab-a", "lab-b"):
        copy = tmp_path / lab / "cnilab"
        copy.parent.mkdir()
        shutil.copy2(path, copy)
        files.append(copy)
        stops.append(copy)
        call(copy, d, "VERSION")
    helpers = [helper_of(d, ident, f) for f in files]
    assert helpers[0] != helpers[1]
    assert subprocess.run([str(files[0]), "--resident-stop"], timeout=60, env={
        "PATH": BARE_PATH, "CNILAB_RUN_DIR": str(d)}).returncode == 0
    assert not is_resident(helpers[0]) and is_resident(helpers[1])
    assert served_version(files[1], d) == "plain"


SLOW_IPAM = """#!/bin/sh
cat >/dev/null
case $CNI_COMMAND in
  VERSION) echo '{"cniVersion":"1.1.0","supportedVersions":["1.0.0","1.1.0"]}' ;;
  STATUS) sleep 1 ;;
esac
"""


def test_the_pool_grows_for_a_burst_and_shrinks_after_it(built, run_dir, tmp_path):
    path, ident = built
    d, _ = run_dir
    bin_dir = tmp_path / "ipam-bin"
    bin_dir.mkdir()
    (bin_dir / "slow").write_text(SLOW_IPAM)
    (bin_dir / "slow").chmod(0o755)
    conf = json.dumps({"cniVersion": "1.1.0", "name": "cnp2burst", "type": "cnilab",
                       "ipam": {"type": "slow"}}).encode()
    call(path, d, "VERSION")
    helper = helper_of(d, ident, path)
    assert wait_for(lambda: len(children_of(helper)) == resident.SPARES)
    with ThreadPoolExecutor(6) as pool:
        done = list(pool.map(lambda _: call(path, d, "STATUS", conf, CNI_PATH=str(bin_dir)),
                             range(6)))
    assert all(r.returncode == 0 for r in done), done
    grown = len(children_of(helper))
    assert grown > resident.SPARES + 2, grown
    assert wait_for(lambda: len(children_of(helper)) == resident.SPARES,
                    timeout=resident.SHRINK_AFTER + 10), children_of(helper)


# -- item 3: paths mean what they mean to the caller -------------------------------------------

def test_a_relative_data_dir_is_the_callers_whether_the_helper_is_up_or_not(
        built, run_dir, node_and_pods, tmp_path):
    path, ident = built
    d, _ = run_dir
    node, (pod, *_) = node_and_pods
    call(path, d, "VERSION", cwd="/")  # the helper starts with / as its working directory
    helper_of(d, ident, path)
    conf = host_local_conf(Path("leases"), name="cnp2rel")
    for mode, extra in (("helper", {}), ("in-process", {"CNILAB_RESIDENT": "0"})):
        work = tmp_path / mode
        work.mkdir()
        env = {"CNILAB_RUN_DIR": str(d), **extra}
        added = run_plugin(node, "ADD", conf, netns=pod, plugin_argv=(str(path),),
                           extra_env=env, cwd=work)
        assert added.returncode == 0, (mode, added)
        assert len(leases(work / "leases", "cnp2rel")) == 1, mode
        deleted = run_plugin(node, "DEL", conf, netns=pod, plugin_argv=(str(path),),
                             extra_env=env, cwd=work)
        assert deleted.returncode == 0, (mode, deleted)
        assert leases(work / "leases", "cnp2rel") == [], mode
    assert not Path("/leases").exists() and not (REPO / "leases").exists()


def test_a_caller_with_its_own_mount_namespace_keeps_its_view(built, run_dir, node_and_pods,
                                                              tmp_path):
    """A tmpfs over dataDir and a namespace bind-mounted in the caller's mount namespace
    only: both must be what the call sees, through the helper as in-process."""
    path, ident = built
    d, _ = run_dir
    node, (pod, *_) = node_and_pods
    call(path, d, "VERSION")
    helper_of(d, ident, path)
    data, netns = tmp_path / "data", tmp_path / "podns"
    data.mkdir()
    netns.touch()
    conf = json.dumps(host_local_conf(data, name="cnp2mnt"))
    script = (f'mount -t tmpfs cnp2 "{data}" && mount --bind /run/netns/{pod} "{netns}" && '
              f'for c in ADD DEL; do CNI_COMMAND=$c "{path}" <"$1" >"$2.$c" || exit 9; '
              f'ls "{data}/cnp2mnt" >>"$2.ls"; done')
    (tmp_path / "conf.json").write_text(conf)
    for mode, extra in (("helper", ""), ("in-process", "CNILAB_RESIDENT=0")):
        out = tmp_path / mode
        done = subprocess.run(
            ["ip", "netns", "exec", node, "unshare", "-m", "--propagation", "private",
             "env", "-i", f"PATH={BARE_PATH}", f"CNILAB_RUN_DIR={d}", *extra.split(),
             "CNI_CONTAINERID=c1", f"CNI_NETNS={netns}", "CNI_IFNAME=eth0",
             f"CNI_PATH={CNI_PATH}", "sh", "-c", script, "sh", str(tmp_path / "conf.json"),
             str(out)], capture_output=True, text=True, timeout=90)
        assert done.returncode == 0, (mode, done.stdout, done.stderr,
                                      *(p.read_text() for p in tmp_path.glob(f"{mode}.*")))
        listed = (tmp_path / f"{mode}.ls").read_text().split()
        assert len([n for n in listed if n.startswith("10.250.")]) == 1, (mode, listed)
        assert json.loads((tmp_path / f"{mode}.ADD").read_text())["ips"], mode
        assert links(pod) == ["lo"], mode
    assert list(data.iterdir()) == [], "a lease landed in the host's directory"


# -- items 7 and 8: a run directory others could write; a user who is not root ----------------

@pytest.mark.parametrize("how", ["foreign owner", "world-writable", "symlink"])
def test_a_run_directory_others_could_write_is_refused(built, tmp_path, how, node_and_pods):
    path, _ = built
    node, (pod, *_) = node_and_pods
    d = tmp_path / "run"
    if how == "symlink":
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        d.symlink_to(tmp_path / "elsewhere")
    else:
        d.mkdir(mode=0o700)
        if how == "foreign owner":
            os.chown(d, 65534, 65534)
        else:
            d.chmod(0o777)
    conf = host_local_conf(tmp_path / "ipam", name="cnp2trust")
    env = {"CNILAB_RUN_DIR": str(d)}
    added = run_plugin(node, "ADD", conf, netns=pod, plugin_argv=(str(path),), extra_env=env)
    assert added.returncode == 1 and added.json["code"] == 5, added
    assert "refusing the run directory" in added.json["msg"], added
    assert "Traceback" not in added.stdout + added.stderr
    assert links(pod) == ["lo"] and leases(tmp_path / "ipam", "cnp2trust") == []
    assert not list(d.iterdir()), "something was written into the untrusted directory"
    assert run_plugin(node, "VERSION", {}, plugin_argv=(str(path),),
                      extra_env=env).returncode == 0


def test_a_user_who_is_not_root_gets_answers_not_tracebacks(built, tmp_path):
    import tempfile

    shared = Path(tempfile.mkdtemp(prefix="cnp2-user-"))  # a file `nobody` may read
    try:
        shared.chmod(0o755)
        path = shared / "cnilab"
        shutil.copy2(built[0], path)
        _as_nobody(path, tmp_path)
    finally:
        shutil.rmtree(shared)


def _as_nobody(path: Path, tmp_path: Path) -> None:
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(path)]
    base = {"PATH": BARE_PATH, "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/none",
            "CNI_IFNAME": "eth0", "CNI_PATH": CNI_PATH}
    conf = json.dumps(host_local_conf(tmp_path / "ipam", name="cnp2user")).encode()
    version = subprocess.run(nobody, input=b"", capture_output=True, timeout=60,
                             env={**base, "CNI_COMMAND": "VERSION"})
    assert version.returncode == 0 and json.loads(version.stdout)["supportedVersions"], version
    for command in ("ADD", "DEL", "CHECK"):
        done = subprocess.run(nobody, input=conf, capture_output=True, timeout=60,
                              env={**base, "CNI_COMMAND": command})
        assert done.returncode == 1, done
        body = json.loads(done.stdout)
        assert set(body) == {"cniVersion", "code", "msg", "details"}, body
        assert b"Traceback" not in done.stdout + done.stderr, done
        if command != "CHECK":  # CHECK without prevResult stops before anything else
            assert "root" in body["msg"], body


def test_del_through_the_helper_answers_once_the_veth_is_gone_for_everyone(
        built, run_dir, node_and_pods, tmp_path):
    """DEL answers when the kernel has unlisted the pair (the freeing that follows, ~12 ms,
    is the worker's to wait for): right after it, the names are free and a new ADD of the
    same attachment works."""
    path, ident = built
    d, _ = run_dir
    node, (pod, *_) = node_and_pods
    env = {"CNILAB_RUN_DIR": str(d)}
    conf = host_local_conf(tmp_path / "ipam", name="cnp2fast")
    call(path, d, "VERSION")
    helper = helper_of(d, ident, path)
    for _ in range(5):
        added = run_plugin(node, "ADD", conf, netns=pod, plugin_argv=(str(path),),
                           extra_env=env)
        assert added.returncode == 0 and served_by_a_worker(added, helper), added
        deleted = run_plugin(node, "DEL", conf, netns=pod, plugin_argv=(str(path),),
                             extra_env=env)
        assert deleted.returncode == 0 and served_by_a_worker(deleted, helper), deleted
        assert links(node) == ["lo"] and links(pod) == ["lo"]
        assert leases(tmp_path / "ipam", "cnp2fast") == []


def test_calls_while_builds_are_copied_over_the_file_get_a_build_or_try_again(
        built, marked_build, run_dir, tmp_path, monkeypatch):
    """cp rewriting the file under running calls (in-process ones read their code from it):
    each call answers with one build's code, whole, or says "try again"; never a traceback."""
    import threading

    (plain, plain_id), (marked, marked_id) = built, marked_build
    d, live = run_dir[0], live_copy(plain, run_dir, tmp_path)
    stop = threading.Event()

    def keep_copying() -> None:
        while not stop.is_set():
            for source in (marked, plain):
                with contextlib.suppress(OSError):  # ETXTBSY: the kernel is exec'ing it
                    shutil.copyfile(source, live)
                time.sleep(0.05)

    copier = threading.Thread(target=keep_copying)
    copier.start()
    answers = []
    try:
        while len(answers) < 40:
            try:
                answers.append(call(live, d, "VERSION",
                                    CNILAB_RESIDENT="0" if len(answers) % 2 else "1"))
            except OSError as e:  # exec refused mid-copy (ETXTBSY): the runtime's to retry
                assert e.errno == errno.ETXTBSY, e
    finally:
        stop.set()
        copier.join()
    torn = 0
    for done in answers:
        text = done.stdout + done.stderr
        assert b"Traceback" not in text, text
        if (not done.stdout and (done.returncode, done.stderr) == (0, b"")) or \
                (done.returncode == 2 and b"Syntax error" in done.stderr):
            torn += 1  # the shell read the file while cp had it empty or half-written
            continue
        body = json.loads(done.stdout)
        if done.returncode == 0:
            assert body.get("build", "plain") in ("plain", "marked"), body
        else:
            assert body["code"] == 11, body
    assert torn < len(answers) // 4, f"{torn} calls read a torn file"
    monkeypatch.setenv("CNILAB_RUN_DIR", str(d))
    for ident in (plain_id, marked_id):
        resident.stop(ident, str(live))
