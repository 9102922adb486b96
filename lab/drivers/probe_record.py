"""What a suite run saw: every traffic probe (who reached whom, in which family, how, and why
not) and every scenario's outcome by group, for the summary printed and written at its end.

The seam between the suites and the report: the pytest plugin owns one ProbeRecorder per run
and hands it to the probes (scenarios/support.py's `Probes(recorder=…)`); probes made outside
pytest have none and record nothing. Nothing here parses output: the probes say what they did.
"""
from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

# scenario module -> the group the summary counts it in; other modules: their stem, dashed
GROUPS = {
    "test_same_node": "same-node", "test_cross_node": "cross-node",
    "test_cni_lifecycle": "lifecycle", "test_cni_contract": "contract",
    "test_leak_audit": "leaks", "test_add_results": "results",
    "test_pod_network": "pod network",
}


def group_of(nodeid: str) -> str:
    """The scenario group of a test id (`scenarios/test_same_node.py::test_x[v4]`)."""
    stem = nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")
    return GROUPS.get(stem, stem.removeprefix("test_").replace("_", "-"))


@dataclass(frozen=True)
class Endpoint:
    """One end of a probe: a pod (on its node) or a node itself."""

    name: str
    node: str
    is_pod: bool = True

    @property
    def label(self) -> str:
        return f"{self.name}@{self.node}" if self.is_pod else self.name


@dataclass(frozen=True)
class Probe:
    source: Endpoint
    destination: Endpoint
    family: int            # 4 or 6
    kind: str              # "icmp", "tcp", "mtu" (a full-size DF ping), …
    passed: bool
    diagnosis: str = ""    # one line: why it failed ("" when it passed or none was found)
    scenario: str = ""     # the test id that made it

    @property
    def crosses_nodes(self) -> bool:
        return self.source.node != self.destination.node


@dataclass(frozen=True)
class Outcome:
    """One scenario's verdict: failed if any phase failed, else skipped if it was skipped."""

    nodeid: str
    outcome: str           # "passed", "failed", "skipped"
    message: str = ""      # a failure's message

    @property
    def group(self) -> str:
        return group_of(self.nodeid)


_RANK = {"passed": 0, "skipped": 1, "failed": 2}


@dataclass
class ProbeRecorder:
    """Collects probes (from the probes' threads: locked) and outcomes for one run."""

    scenario: str = ""                   # the test running now, set by the pytest plugin
    probes: list[Probe] = field(default_factory=list)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, source: Endpoint, destination: Endpoint, family: int, kind: str,
               passed: bool, diagnosis: str = "") -> None:
        probe = Probe(source, destination, family, kind, passed,
                      one_line(diagnosis), self.scenario)
        with self._lock:
            self.probes.append(probe)

    def outcome(self, nodeid: str, outcome: str, message: str = "") -> None:
        """A phase's outcome: a test's worst phase is its verdict (a teardown that fails
        after a passing call fails the test; the first failure's message is kept)."""
        with self._lock:
            before = self.outcomes.get(nodeid)
            if before is None or _RANK[outcome] > _RANK[before.outcome]:
                self.outcomes[nodeid] = Outcome(nodeid, outcome, message)

    def families(self) -> list[int]:
        return sorted({p.family for p in self.probes})

    def groups(self) -> dict[str, dict[str, int]]:
        """group -> {"passed": n, "failed": n, "skipped": n}, in the order groups first ran."""
        counts: dict[str, dict[str, int]] = {}
        for result in self.outcomes.values():
            tally = counts.setdefault(result.group, dict.fromkeys(_RANK, 0))
            tally[result.outcome] += 1
        return counts

    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes.values() if o.outcome == "failed"]


def one_line(text: str) -> str:
    """The diagnosis a matrix cell stands for: its first line, without the `diagnosis:` tag."""
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return first.removeprefix("diagnosis:").strip()


def endpoints(probes: Iterable[Probe]) -> tuple[list[Endpoint], list[Endpoint]]:
    """Sources and destinations of the probes, in the order a matrix shows them: pods by node
    then first appearance, nodes after the pods; the destinations that are also sources first
    and in the same order (a square with its diagonal), then the others."""
    listed = list(probes)
    seen: dict[Endpoint, int] = {}
    for probe in listed:
        for end in (probe.source, probe.destination):
            seen.setdefault(end, len(seen))

    def order(end: Endpoint) -> tuple[bool, str, int]:
        return (not end.is_pod, end.node, seen[end])

    sources = sorted({p.source for p in listed}, key=order)
    rank = {end: i for i, end in enumerate(sources)}
    destinations = sorted({p.destination for p in listed},
                          key=lambda end: (rank.get(end, len(rank)), order(end)))
    return sources, destinations
