"""A node's host side as a set of one-line items (links, addresses, routes, rules, permanent
neighbours, files in the plugin's data dirs), read with one command, and the ledger that
attributes what a pod leaves behind to that pod and the scenario that made it.

Each pod's footprint is what appeared on its node while its ADD ran; after its DEL whatever of
the footprint is still there, and belongs to no live pod, is a leak of that pod. Pods added at
once share footprints: an item is judged when the last pod that could own it is gone, and it
is blamed on the pods whose name, address or container ID it mentions (else on all of them).
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from lab.api import AttachOptions, Cluster, LabError, Node, Pod, bridge_port

# One command on the node, four processes: each `ip -batch` prints its sections with the line
# of `link show dev lo` (always there, always the same) between them, and find lists the data
# dirs. Noise a runtime or traffic makes is left out: kernel routes of addresses, the local
# table, link-local addresses, learned neighbours, the default rules, logs, locks.
_SECTIONS = ("link", "address", "route", "rule", "neighbour")
_V4_BATCH = "\n".join(("link show", "link show dev lo", "addr show", "link show dev lo",
                       "route show table all", "link show dev lo", "rule show",
                       "link show dev lo", "neigh show nud permanent"))
_V6_BATCH = "\n".join(("route show table all", "link show dev lo", "rule show"))
_SNAPSHOT = """
printf '%s\\n' "$0" | ip -o -batch -; echo @v6
[ -n "$1" ] && printf '%s\\n' "$1" | ip -o -6 -batch -
echo @file; shift; for d in "$@"; do [ -d "$d" ] && find "$d" -type f ! -name '*.log' \\
  ! -name lock ! -path '*/results/*'; done; true
"""
_DEFAULT_RULES = {"from all lookup local", "from all lookup main", "from all lookup default"}
_ROUTE_NOISE = ("proto kernel", "table local")
_ROUTE_DROP = {"linkdown", "onlink"}


def _item(section: str, line: str) -> str:
    """One snapshot line as an item ("" for noise)."""
    words = line.split()
    if section == "link":
        return f"link {words[1].rstrip(':').split('@')[0]}" if len(words) > 1 else ""
    if section == "address":
        if len(words) < 4 or words[3].startswith("fe80:"):
            return ""
        return f"address {words[3]} on {words[1]}"
    if section == "route":
        if any(n in line for n in _ROUTE_NOISE) or words[0] in ("local", "broadcast",
                                                                "multicast", "anycast"):
            return ""
        kept, skip = [], False
        for word in words:      # metric, proto and pref change with nothing a pod did
            if skip:
                skip = False
            elif word in ("metric", "proto", "pref"):
                skip = True
            elif word not in _ROUTE_DROP:
                kept.append(word)
        return "route " + " ".join(kept)
    if section == "rule":
        rule = line.split(":", 1)[-1].strip()
        return "" if rule in _DEFAULT_RULES else f"rule {rule}"
    return f"{section} {line.strip()}"


def data_dirs(cluster: Cluster, node: Node) -> list[str]:
    """Where the plugin keeps state on node: its IPAM dir and the node's state dir."""
    dirs = [node.state_dir] if getattr(node, "state_dir", "") else []
    ipam_dir = getattr(cluster, "ipam_dir", None)
    if ipam_dir is not None:
        with contextlib.suppress(Exception):   # a config without IPAM: nothing more to read
            dirs.append(ipam_dir(node.name))
    return dirs


def host_view(cluster: Cluster, node: Node) -> tuple[frozenset[str], dict[str, str]]:
    """The node's host side as items, and each link's MAC (what a judge compares with)."""
    v6 = _V6_BATCH if 6 in getattr(cluster, "families", (4,)) else ""
    res = node.run(["sh", "-c", _SNAPSHOT, _V4_BATCH, v6, *data_dirs(cluster, node)],
                   timeout=30)
    v4, _, rest = res.stdout.partition("\n@v6\n")
    v6_text, _, files = rest.partition("@file\n")
    lines = v4.splitlines()
    marker = lines[0] if lines else None      # lo is link 1: the first line of `link show`
    groups: list[list[str]] = [[]]
    for line in lines[1:]:
        if line == marker:
            groups.append([])
        else:
            groups[-1].append(line)
    # Links the cluster's own network makes for every pod (flannel's ports on its bridge on a
    # Kubernetes lab where the plugin is net1) are the other plugin's, not the one judged.
    foreign = getattr(cluster, "cluster_network_bridges", ())
    items = {_item(section, line) for section, group in zip(_SECTIONS, groups)
             for line in group if not (section == "link" and bridge_port(line, foreign))}
    macs = {}
    for line in groups[0]:
        words = line.split()
        if "link/ether" in words[:-1]:
            macs[words[1].rstrip(":").split("@")[0]] = words[words.index("link/ether") + 1]
    v6_route, _, v6_rule = v6_text.partition(f"{marker}\n" if marker else "\0")
    items |= {_item("route", line) for line in v6_route.splitlines()}
    items |= {_item("rule", line) for line in v6_rule.splitlines()}
    items |= {f"file {line}" for line in files.splitlines() if line.strip()}
    items.discard("")
    return frozenset(items), macs


def host_side(cluster: Cluster, node: Node) -> frozenset[str]:
    return host_view(cluster, node)[0]


@dataclass(frozen=True)
class _Seen:
    items: frozenset[str]
    macs: dict[str, str]
    started: float
    test: int


class Snapshots:
    """The last host view of each node, shared by pods added or deleted at once: a view taken
    after an ADD or DEL ended serves every pod whose call ended before it began, and the last
    view of the running scenario serves as the "before" of its next ADD."""

    def __init__(self, cluster: Cluster, nodes: dict[str, Node]) -> None:
        self._cluster, self._nodes = cluster, nodes
        self._last: dict[str, _Seen] = {}
        self._locks = {name: threading.Lock() for name in nodes}
        self.test = 0

    def before(self, node: str) -> _Seen:
        with self._locks[node]:
            seen = self._last.get(node)
            return seen if seen is not None and seen.test == self.test else self._take(node)

    def after(self, node: str, since: float) -> _Seen:
        with self._locks[node]:
            seen = self._last.get(node)
            return seen if seen is not None and seen.started >= since else self._take(node)

    def all_after(self, since: float) -> dict[str, _Seen]:
        with ThreadPoolExecutor(max_workers=len(self._nodes)) as pool:
            return dict(zip(self._nodes, pool.map(lambda n: self.after(n, since), self._nodes)))

    def forget(self, node: str) -> None:
        """The node changed outside any pod's ADD or DEL (a warm-up): take a new view."""
        with self._locks[node]:
            self._last.pop(node, None)

    def carry_over(self) -> None:
        """The views at a scenario's end are the next scenario's start: nothing runs between."""
        for node, seen in self._last.items():
            self._last[node] = replace(seen, test=self.test + 1)

    def _take(self, node: str) -> _Seen:
        started = time.monotonic()
        items, macs = host_view(self._cluster, self._nodes[node])
        self._last[node] = _Seen(items, macs, started, self.test)
        return self._last[node]


def pod_marks(pod: Pod) -> set[str]:
    """Strings that name a pod in an item: its addresses, container ID, name."""
    ips = set((getattr(pod, "ips", None) or {}).values()) | {pod.ip}
    return {m for m in (*ips, pod.attachment.container_id, pod.name) if m}


def mentions(item: str, marks: Iterable[str]) -> bool:
    words = set(item.replace("/", " ").split())
    return any(m in words or (len(m) > 12 and m in item) for m in marks)


@dataclass
class Leak:
    node: str
    item: str
    pods: list[str]          # "pod (made by test)" of each pod it is blamed on

    def describe(self) -> str:
        return f"{self.node}: {self.item}  <- left by {', '.join(self.pods)}"


@dataclass
class _Footprint:
    pod: Pod
    test: str
    items: set[str]
    live: bool = True


@dataclass
class Ledger:
    """Footprints of the pods made through JudgedCluster, and the leaks found at their DEL."""
    footprints: dict[tuple[str, str], _Footprint] = field(default_factory=dict)
    leaks: list[Leak] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def born(self, pod: Pod, test: str, items: set[str]) -> None:
        with self.lock:
            self.footprints[(pod.node, pod.name)] = _Footprint(pod, test, items)

    def died(self, pod: Pod, now: frozenset[str]) -> None:
        """`now` is the node's host side read after the pod's DEL, under `lock`."""
        mine = self.footprints.get((pod.node, pod.name))
        if mine is None:
            return
        mine.live = False
        same_node = [f for (node, _), f in self.footprints.items() if node == pod.node]
        for item in sorted(mine.items & now):
            holders = [f for f in same_node if item in f.items]
            if any(f.live for f in holders):
                continue        # a live pod may own it: judged when that one goes
            named = [f for f in holders if mentions(item, pod_marks(f.pod))] or holders
            self.leaks.append(Leak(pod.node, item,
                                   [f"pod {f.pod.name} (made by {f.test})" for f in named]))
            for f in holders:
                f.items.discard(item)
        for f in same_node:     # what is gone is nobody's leak any more
            if not f.live:
                f.items &= set(now)

    def take(self) -> list[Leak]:
        with self.lock:
            taken, self.leaks = self.leaks, []
            return taken


class JudgedCluster:
    """The cluster under test, with every ADD's footprint recorded and every ADD result judged
    (findings kept for test_add_results.py) and every DEL checked for what it left."""

    def __init__(self, cluster: Cluster, judge: Callable[[Pod, dict[str, str]], list[str]],
                 running: Callable[[], str], cold: Iterable[str] = (),
                 warm: Callable[[str], bool] = lambda node: True) -> None:
        self._cluster = cluster
        self._cold = set(cold)       # nodes whose warm-up pod failed: warmed before first use
        self._warm = warm            # node -> whether a warm-up ADD and DEL there worked
        self._judge = judge          # (pod, the node's link MACs) -> findings
        self._running = running      # the scenario now running: who made a pod
        self.ledger = Ledger()
        self.findings: list[tuple[str, str, list[str]]] = []   # (test, pod, findings)
        self._nodes = {n.name: n for n in cluster.nodes()}
        self._warming = {name: threading.Lock() for name in self._nodes}
        self.snapshots = Snapshots(cluster, self._nodes)
        self._began = self.snapshots.all_after(time.monotonic())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cluster, name)

    def next_test(self) -> None:
        """A scenario begins: what it does to the nodes by hand is no pod's footprint."""
        self.snapshots.test += 1
        self._began = {node: self.snapshots.before(node) for node in self._nodes}

    def scenario_left(self, reported: Iterable[Leak]) -> list[str]:
        """What is on the nodes now and was not when the scenario began, that no live pod may
        own and no pod's leak already names: what the scenario itself left behind."""
        now = self.snapshots.all_after(time.monotonic())
        known = {(leak.node, leak.item) for leak in reported}
        with self.ledger.lock:
            live = {(node, item) for (node, _), f in self.ledger.footprints.items() if f.live
                    for item in f.items}
        self.snapshots.carry_over()
        return [f"{node}: {item}" for node, seen in now.items()
                for item in sorted(seen.items - self._began[node].items)
                if (node, item) not in live | known]

    def _warmed(self, node: str) -> None:
        """A node's once-per-node set-up is made by a warm-up pod, not the scenario's."""
        with self._warming[node]:
            if node in self._cold and self._warm(node):
                self._cold.discard(node)
                self.snapshots.forget(node)
                self._began[node] = self.snapshots.before(node)

    def create_pod(self, name: str, node: str, options: AttachOptions | None = None) -> Pod:
        test = self._running()
        if node in self._cold:
            self._warmed(node)
        before = self.snapshots.before(node)
        try:
            pod = self._cluster.create_pod(name, node, options) if options else \
                self._cluster.create_pod(name, node)
        except LabError as e:
            failed = e.describe()
        else:
            failed = ""
        if failed:     # what the plugin said, not a trace through the harness
            pytest.fail(f"ADD of pod {name} on {node} failed: {failed}", pytrace=False)
        after = self.snapshots.after(node, since=time.monotonic())
        self.ledger.born(pod, test, set(after.items - before.items))
        found = self._judge(pod, after.macs)
        if found:
            with self.ledger.lock:
                self.findings.append((test, pod.name, found))
        return pod

    def delete_pod(self, pod: Pod) -> None:
        self._cluster.delete_pod(pod)
        ended = time.monotonic()
        with self.ledger.lock:
            self.ledger.died(pod, self.snapshots.after(pod.node, since=ended).items)
