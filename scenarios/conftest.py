"""Fixtures for the scenarios: shared pods, the traffic probe, and the leak audit's baseline.

The scenarios talk only to the Cluster/Pod/Node interface and to testinfra hosts, so the same
files run on the netns lab and on Kubernetes. Test names say what they cross: `same_node` or
`cross_node` is in every name where it matters (`pytest scenarios -k cross_node`). The lab
fixtures (`lab`, `cluster`, `nodes`, `node_host`, `pod_factory`) come from cnilab's pytest
plugin; helpers live in support.py.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from lab.api import Cluster, LabError, Node, Pod
from lab.drivers.probe_record import ProbeRecorder

from .hostside import JudgedCluster
from .judge import judge_add
from .support import NodeSnapshot, Probes, delete_pods, lab_families, make_pods, snapshot

AUDIT_MODULE = "test_leak_audit.py"
_JUDGED = pytest.StashKey[JudgedCluster]()
_RUNNING = pytest.StashKey[str]()      # the scenario being set up, run or torn down


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Scenarios that take `family` run once per address family the lab runs: [v4], [v6]."""
    if "family" in metafunc.fixturenames:
        families = lab_families(metafunc.config)
        metafunc.parametrize("family", families, ids=[f"v{f}" for f in families])


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The leak audit judges what every other scenario left behind: it runs last."""
    items.sort(key=lambda item: item.path.name == AUDIT_MODULE)


@pytest.fixture(scope="session")
def cluster(cluster: Cluster, pytestconfig: pytest.Config) -> JudgedCluster:
    """The lab's cluster, every ADD judged and every DEL checked for leftovers (hostside.py).

    One pod per node is added and deleted first: what a plugin sets up once per node (peer
    routes, a VTEP, the cluster network's bridge) is there before the first scenario, so only
    what pods leave counts. A node whose warm-up pod could not be made (a starved API server
    on emulated VMs) is warmed again before its first scenario pod, or that pod would be
    blamed for the node's set-up."""
    def warm(node: str) -> bool:
        try:
            delete_pods(cluster, make_pods(cluster, [(f"warm-{node}"[:20].rstrip("-"), node)]))
        except LabError:
            return False   # the first scenario that makes a pod says what ADD did
        return True

    nodes = {n.name: n for n in cluster.nodes()}
    with ThreadPoolExecutor(max_workers=len(nodes) or 1) as pool:
        cold = {name for name, warmed in zip(nodes, pool.map(warm, nodes)) if not warmed}
    add_result = getattr(cluster, "add_result", lambda pod: None)

    def judge(pod: Pod, node_macs: dict[str, str]) -> list[str]:
        return judge_add(add_result(pod), cluster.cni_version, pod, nodes[pod.node],
                         node_macs)

    judged = JudgedCluster(cluster, judge,
                           lambda: pytestconfig.stash.get(_RUNNING, "the session's set-up"),
                           cold, warm)
    pytestconfig.stash[_JUDGED] = judged
    return judged


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    item.config.stash[_RUNNING] = item.name
    judged = item.config.stash.get(_JUDGED, None)
    if judged is not None:
        judged.next_test()
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    """What a pod left on its node after its DEL fails the scenario whose teardown found it,
    naming the pod and the scenario that made it; so does what the scenario left by hand."""
    result = yield
    judged = item.config.stash.get(_JUDGED, None)
    if judged is None:
        return result
    leaks = judged.ledger.take()
    left = judged.scenario_left(leaks)
    said = []
    if leaks:
        said.append("pods left host-side state behind after their DEL:\n  "
                    + "\n  ".join(leak.describe() for leak in leaks))
    if left:
        said.append(f"{item.name} left on the nodes what no pod made:\n  " + "\n  ".join(left))
    if said:
        pytest.fail("\n".join(said), pytrace=False)
    return result


@pytest.fixture(scope="session")
def probe(node_host: Callable[[Node], Any], probe_recorder: ProbeRecorder) -> Probes:
    """The traffic probes, reporting to the run's recorder (the end-of-run matrix)."""
    return Probes(node_host, probe_recorder)


@pytest.fixture(scope="module")
def pod_per_node(cluster: Cluster) -> Iterator[dict[str, Pod]]:
    """One pod on every node, shared by a module's tests (made in parallel, deleted after)."""
    nodes = [n.name for n in cluster.nodes()]
    pods = make_pods(cluster, [(f"on-{name}"[:20].rstrip("-"), name) for name in nodes])
    try:
        yield dict(zip(nodes, pods))
    finally:
        delete_pods(cluster, pods)


@pytest.fixture(scope="module")
def neighbours(cluster: Cluster) -> Iterator[tuple[Pod, Pod]]:
    """Two pods on the first node."""
    first = cluster.nodes()[0].name
    a, b = make_pods(cluster, [("left", first), ("right", first)])
    try:
        yield a, b
    finally:
        delete_pods(cluster, [a, b])


@pytest.fixture(scope="module")
def two_nodes(cluster: Cluster) -> tuple[Node, Node]:
    nodes = cluster.nodes()
    if len(nodes) < 2:
        pytest.skip("cross-node scenarios need a lab with at least 2 nodes")
    return nodes[0], nodes[1]


@pytest.fixture(scope="session", autouse=True)
def leak_baseline(cluster: JudgedCluster) -> dict[str, NodeSnapshot]:
    """What the nodes held before the first scenario: the audit compares against it."""
    return snapshot(cluster)
