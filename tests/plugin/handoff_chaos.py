"""A chaos run of the shell hand-off (issue 20): N callers, each ADD then DEL of its own
attachment, over and over, while a striker SIGSTOPs, SIGCONTs and SIGKILLs callers, workers
and the helper at random. Counts what must never happen: a call past the documented bound,
an answer that is not its caller's (an ADD result names the caller's own namespace and
host veth; a DEL prints nothing), an error outside the clean set, and (checked by the
tests after the runtime's last DEL of each attachment) anything left behind.

Used by tests/plugin/test_handoff_chaos.py: a short run in CI, the long one (10,000 calls
per caller) as a `slow` test.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cnitest import BARE_PATH, CNI_PATH, children_of, host_local_conf

from plugin.cni.deadline import CLEANUP_GRACE
from plugin.cni.wiring import host_veth_name
from plugin.delivery import handoff

NET = "cnp2hchaos"
CALL_TIMEOUT = 5
# What a caller may take at most (docs/speed.md): its ticks run out after CALL_TIMEOUT +
# HANDOFF_MARGIN seconds; a call it then runs itself has its budget and cleanup.
BOUND = CALL_TIMEOUT + handoff.HANDOFF_MARGIN + CALL_TIMEOUT + CLEANUP_GRACE
PROGRESS_EVERY = 60.0
CLEAN_CODES = {11, 100, 101, 102}  # try again; eth0 left by a killed ADD; netlink; IPAM


@dataclass
class Tally:
    calls: int = 0
    late: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    unclean: list[str] = field(default_factory=list)
    outcomes: Counter = field(default_factory=Counter)
    blows: Counter = field(default_factory=Counter)
    slowest: float = 0.0


class Run:
    def __init__(self, plugin: Path, run_dir: Path, node: str, pods: list[str], ipam: Path,
                 seed: int) -> None:
        self.plugin, self.run_dir, self.node, self.pods = plugin, run_dir, node, pods
        self.conf = json.dumps(host_local_conf(ipam, "10.250.80.0/24", name=NET)).encode()
        self.rng = random.Random(seed)
        self.tally = Tally()
        self.lock = threading.Lock()
        self.live: dict[int, subprocess.Popen] = {}
        self.done = threading.Event()

    def env(self, command: str, i: int) -> dict[str, str]:
        return {"PATH": BARE_PATH, "CNI_COMMAND": command, "CNI_CONTAINERID": f"c-{i}",
                "CNI_NETNS": f"/run/netns/{self.pods[i]}", "CNI_IFNAME": "eth0",
                "CNI_PATH": CNI_PATH, "CNILAB_RUN_DIR": str(self.run_dir),
                "CNILAB_CALL_TIMEOUT": str(CALL_TIMEOUT)}

    def call(self, command: str, i: int) -> int:
        """One call as a runtime makes it; returns its exit code (-9: we killed it)."""
        started = time.monotonic()
        proc = subprocess.Popen(["ip", "netns", "exec", self.node, str(self.plugin)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=self.env(command, i))
        with self.lock:
            self.live[proc.pid] = proc
        try:
            out, _ = proc.communicate(self.conf, timeout=BOUND + 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            out = b""
        finally:
            with self.lock:
                self.live.pop(proc.pid, None)
        took = time.monotonic() - started
        self.judge(command, i, proc.returncode, out.decode(errors="replace"), took)
        return proc.returncode

    def judge(self, command: str, i: int, code: int, out: str, took: float) -> None:
        what = f"{command} c-{i}: exit {code} after {took:.1f}s: {out[:300]!r}"
        with self.lock:
            self.tally.calls += 1
            self.tally.slowest = max(self.tally.slowest, took)
            if took > BOUND:
                self.tally.late.append(what)
            if code < 0:  # killed (by the striker): its runtime learns nothing more
                self.tally.outcomes[(command, "killed")] += 1
                return
            docs = [line for line in out.splitlines() if line.strip()]
            if code == 0 and command == "ADD":
                ok = len(docs) == 1 and _names_its_own(json.loads(docs[0]), i, self.pods[i])
                (self.tally.outcomes.update([(command, 0)]) if ok
                 else self.tally.wrong.append(what))
            elif code == 0:
                (self.tally.outcomes.update([(command, 0)]) if not docs
                 else self.tally.wrong.append(what))
            else:
                try:
                    body = json.loads(docs[0]) if len(docs) == 1 else {}
                except ValueError:
                    body = {}
                if set(body) != {"cniVersion", "code", "msg", "details"}:
                    self.tally.wrong.append(what)  # two answers, or one not for this call
                elif body["code"] not in CLEAN_CODES:
                    self.tally.unclean.append(what)
                else:
                    self.tally.outcomes[(command, body["code"])] += 1

    def caller(self, i: int, calls: int) -> None:
        for n in range(calls):
            self.call("ADD" if n % 2 == 0 else "DEL", i)

    def helper(self) -> int:
        with contextlib.suppress(OSError, ValueError, StopIteration):
            return int(next(self.run_dir.glob("resident-*.pid")).read_text())
        return 0

    def strike(self) -> None:
        """One blow at a random moment: freeze or kill a caller, a worker or the helper."""
        time.sleep(self.rng.uniform(0.02, 0.3))
        helper = self.helper()
        workers = children_of(helper) if helper else []
        with self.lock:
            callers = [p.pid for p in self.live.values()]
        kind = self.rng.choices(["caller", "worker", "helper"], [6, 3, 1])[0]
        targets = {"caller": callers, "worker": workers, "helper": [helper] if helper else []}
        if not targets[kind]:
            return
        victim = self.rng.choice(targets[kind])
        if self.rng.random() < 0.5:
            _signal(victim, signal.SIGKILL)
            self.tally.blows[(kind, "kill")] += 1
            return
        _signal(victim, signal.SIGSTOP)
        time.sleep(self.rng.uniform(0, 1.0))
        if self.rng.random() < 0.3:
            _signal(victim, signal.SIGKILL)
            self.tally.blows[(kind, "stop, kill")] += 1
        else:
            self.tally.blows[(kind, "stop, cont")] += 1
        _signal(victim, signal.SIGCONT)

    def striker(self) -> None:
        while not self.done.is_set():
            self.strike()

    def run(self, calls: int) -> Tally:
        threads = [threading.Thread(target=self.caller, args=(i, calls))
                   for i in range(len(self.pods))]
        striker = threading.Thread(target=self.striker)
        reporter = threading.Thread(target=self.reporter)
        for t in threads:
            t.start()
        striker.start()
        reporter.start()
        for t in threads:
            t.join()
        self.done.set()
        striker.join()
        reporter.join()
        return self.tally

    def reporter(self) -> None:
        """A line a minute, so a run cut short still says what it judged (pytest -s)."""
        started = time.monotonic()
        while not self.done.wait(PROGRESS_EVERY):
            print(self.progress(time.monotonic() - started), flush=True)

    def progress(self, seconds: float) -> str:
        with self.lock:
            t = self.tally
            return (f"chaos after {seconds:.0f}s: {t.calls} calls ({t.calls / seconds:.1f}/s), "
                    f"late {len(t.late)}, wrong {len(t.wrong)}, unclean {len(t.unclean)}, "
                    f"slowest {t.slowest:.1f}s, blows {sum(t.blows.values())}")

    def delete_everything(self) -> list[str]:
        """The runtime's last DEL of each attachment, until it succeeds; what failed."""
        failed = []
        for i in range(len(self.pods)):
            for _attempt in range(3):
                if self.call("DEL", i) == 0:
                    break
            else:
                failed.append(f"c-{i}")
        return failed


def _names_its_own(result: dict, i: int, pod: str) -> bool:
    interfaces = result.get("interfaces", [])
    return len(interfaces) == 2 and \
        interfaces[0].get("name") == host_veth_name(NET, f"c-{i}", "eth0") and \
        interfaces[1].get("sandbox") == f"/run/netns/{pod}"


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
