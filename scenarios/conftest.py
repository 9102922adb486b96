"""Fixtures for the scenarios: shared pods, the traffic probe, and the leak audit's baseline.

The scenarios talk only to the Cluster/Pod/Node interface and to testinfra hosts, so the same
files run on the netns lab and on Kubernetes. Test names say what they cross: `same_node` or
`cross_node` is in every name where it matters (`pytest scenarios -k cross_node`). The lab
fixtures (`lab`, `cluster`, `nodes`, `node_host`, `pod_factory`) come from cnilab's pytest
plugin; helpers live in support.py.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from lab.api import Cluster, Node, Pod

from .support import NodeSnapshot, Probes, delete_pods, lab_families, make_pods, snapshot

AUDIT_MODULE = "test_leak_audit.py"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Scenarios that take `family` run once per address family the lab runs: [v4], [v6]."""
    if "family" in metafunc.fixturenames:
        families = lab_families(metafunc.config)
        metafunc.parametrize("family", families, ids=[f"v{f}" for f in families])


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The leak audit judges what every other scenario left behind: it runs last."""
    items.sort(key=lambda item: item.path.name == AUDIT_MODULE)


@pytest.fixture(scope="session")
def probe(node_host: Callable[[Node], Any]) -> Probes:
    return Probes(node_host)


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
def leak_baseline(cluster: Cluster) -> dict[str, NodeSnapshot]:
    """What the nodes held before the first scenario: the audit compares against it."""
    return snapshot(cluster)
