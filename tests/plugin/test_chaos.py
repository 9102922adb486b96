"""Chaos: the helper, its workers and the callers killed (or frozen) at random points while
ADDs and DELs run through dist/cnilab. Every call must end within DEADLINE with a result or a
clean CNI error; afterwards DEL and GC must leave nothing (issue 11, item 1).

Bounded: a fixed number of rounds in namespaces of the test's own, a short call budget
(CNILAB_CALL_TIMEOUT) so that even the callers' own timers fire within the test. The seed is
printed on failure (CNILAB_CHAOS_SEED repeats a run).
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cnitest import (
    BARE_PATH,
    CNI_PATH,
    create_ns,
    delete_ns,
    host_local_conf,
    leases,
    links,
    routes,
    unique_ns_name,
    wait_for,
)

from plugin.delivery import build, handoff

pytestmark = [pytest.mark.root, pytest.mark.slow]
CALL_TIMEOUT = 6
# What a caller may wait at most: its call's budget and cleanup, plus the hand-off's margin.
DEADLINE = CALL_TIMEOUT + 10 + handoff.HANDOFF_MARGIN + 5
PODS = 6
ROUNDS = 14
NET = "cnp2chaos"
CLEAN_CODES = {11, 101, 102, 100}  # try again; eth0 left by a killed ADD; netlink; IPAM


def processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state) of every process."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[int(stat.parent.name)] = (int(fields[1]), fields[0])
    return found


def signal_all(pids, sig) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


class Chaos:
    def __init__(self, path: Path, ident: str, run_dir: Path, node: str, pods: list[str],
                 ipam: Path, rng: random.Random) -> None:
        self.path, self.ident, self.run_dir = path, ident, run_dir
        self.node, self.pods, self.ipam, self.rng = node, pods, ipam, rng
        self.conf = json.dumps(host_local_conf(ipam, "10.250.70.0/24", name=NET)).encode()
        self.base = handoff.base_name(str(run_dir), ident, path.stat())
        self.callers: list[subprocess.Popen] = []
        self.killed_callers: set[int] = set()
        self.outcomes: list[tuple[str, int, str, float]] = []

    def env(self, command: str, pod: str) -> dict[str, str]:
        return {"PATH": BARE_PATH, "CNI_COMMAND": command, "CNI_CONTAINERID": f"c-{pod}",
                "CNI_NETNS": f"/run/netns/{pod}", "CNI_IFNAME": "eth0", "CNI_PATH": CNI_PATH,
                "CNILAB_RUN_DIR": str(self.run_dir),
                "CNILAB_CALL_TIMEOUT": str(CALL_TIMEOUT)}

    def call(self, command: str, pod: str) -> None:
        started = time.monotonic()
        proc = subprocess.Popen(["ip", "netns", "exec", self.node, str(self.path)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=self.env(command, pod))
        self.callers.append(proc)
        try:
            out, err = proc.communicate(self.conf, timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            self.outcomes.append((command, -1, f"no answer within {DEADLINE}s", DEADLINE))
            return
        took = time.monotonic() - started
        text = out.decode(errors="replace") + err.decode(errors="replace")
        self.outcomes.append((command, proc.returncode if proc.pid not in
                              self.killed_callers else -9, text, took))

    def helper(self) -> int | None:
        try:
            return int(Path(self.base + ".pid").read_text())
        except (OSError, ValueError):
            return None

    def workers(self, helper: int | None) -> list[int]:
        return [pid for pid, (ppid, _) in processes().items() if helper and ppid == helper]

    def strike(self) -> str:
        """One random blow at a random moment of the calls in flight."""
        time.sleep(self.rng.uniform(0, 0.15))
        helper = self.helper()
        workers = self.workers(helper)
        what = self.rng.choice(["helper", "worker", "all", "caller", "freeze", "none"])
        if what == "helper" and helper:
            signal_all([helper], signal.SIGKILL)
        elif what == "worker" and workers:
            signal_all([self.rng.choice(workers)], signal.SIGKILL)
        elif what == "all" and helper:
            signal_all([helper, *workers], signal.SIGKILL)
        elif what == "caller":
            live = [p for p in self.callers if p.poll() is None]
            if live:
                victim = self.rng.choice(live)
                self.killed_callers.add(victim.pid)
                victim.kill()
        elif what == "freeze" and helper:  # the reproduction: stop, wait, kill
            signal_all([helper, *workers], signal.SIGSTOP)
            time.sleep(self.rng.uniform(0.2, 1.0))
            signal_all([helper, *workers], signal.SIGKILL)
        return what

    def round(self) -> str:
        added = {p for p in self.pods if "eth0" in links(p)}
        jobs = [("DEL" if p in added and self.rng.random() < 0.6 else "ADD", p)
                for p in self.rng.sample(self.pods, self.rng.randint(2, len(self.pods)))]
        with ThreadPoolExecutor(len(jobs) + 1) as pool:
            calls = [pool.submit(self.call, command, pod) for command, pod in jobs]
            what = pool.submit(self.strike).result()
            for c in calls:
                c.result()
        return what


@pytest.fixture
def chaos(tmp_path):
    seed = int(os.environ.get("CNILAB_CHAOS_SEED") or time.time())
    print(f"chaos seed {seed} (CNILAB_CHAOS_SEED={seed} repeats it)")
    node = unique_ns_name("cnp2-", "cnode")
    pods = [unique_ns_name("cnp2-", f"cp{i}") for i in range(PODS)]
    path = tmp_path / "bin" / "cnilab"
    path.parent.mkdir()
    ident = build.build(path)
    run_dir = tmp_path / "run"
    try:
        for ns in (node, *pods):
            create_ns(ns)
        yield Chaos(path, ident, run_dir, node, pods, tmp_path / "ipam", random.Random(seed))
    finally:
        subprocess.run([str(path), "--resident-stop"], capture_output=True, timeout=60,
                       env={"PATH": BARE_PATH, "CNILAB_RUN_DIR": str(run_dir)})
        stopped = [pid for pid, (_, state) in processes().items() if state == "T"]
        for pid in stopped:  # nothing of ours may stay frozen
            if _cmdline_has(pid, str(run_dir)):
                signal_all([pid], signal.SIGKILL)
        for ns in (*pods, node):
            delete_ns(ns)


def test_calls_end_in_time_and_leave_nothing_whatever_is_killed(chaos):
    subprocess.run([str(chaos.path)], input=b"", capture_output=True, timeout=60,
                   env={**chaos.env("VERSION", chaos.pods[0]), "CNI_COMMAND": "VERSION"})
    assert wait_for(lambda: chaos.helper() is not None), "no helper to start with"
    blows = [chaos.round() for _ in range(ROUNDS)]

    assert len(chaos.outcomes) >= ROUNDS * 2
    for command, code, text, took in chaos.outcomes:
        assert took < DEADLINE, (command, took, text)
        assert "Traceback" not in text, text
        if code in (0, -9):  # success, or a caller we killed ourselves
            continue
        assert code == 1, (command, code, text)
        body = json.loads(text.splitlines()[0])
        assert set(body) == {"cniVersion", "code", "msg", "details"}, body
        assert body["code"] in CLEAN_CODES, (command, body)
    print("blows:", blows, "outcomes:", sorted({(c, code) for c, code, _, _ in chaos.outcomes}))

    # What a runtime does after failures: DEL every attachment (until it succeeds), then GC.
    for pod in chaos.pods:
        for _attempt in range(3):
            chaos.call("DEL", pod)
            if chaos.outcomes[-1][1] == 0:
                break
        assert chaos.outcomes[-1][1] == 0, chaos.outcomes[-1]
    gc = dict(json.loads(chaos.conf), **{"cni.dev/valid-attachments": []})
    chaos.conf = json.dumps(gc).encode()
    chaos.call("GC", chaos.pods[0])
    assert chaos.outcomes[-1][1] == 0, chaos.outcomes[-1]
    for pod in chaos.pods:
        assert links(pod) == ["lo"] and routes(pod) == [], pod
    assert links(chaos.node) == ["lo"] and routes(chaos.node) == []
    assert leases(chaos.ipam, NET) == []
    # ...and no helper or worker of a killed helper lives on
    subprocess.run([str(chaos.path), "--resident-stop"], capture_output=True, timeout=60,
                   env={"PATH": BARE_PATH, "CNILAB_RUN_DIR": str(chaos.run_dir)})
    ours = str(chaos.run_dir / "lib")
    assert wait_for(lambda: not [p for p in processes() if _cmdline_has(p, ours)], 20)


def _cmdline_has(pid: int, text: str) -> bool:
    try:
        return text in Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return False
