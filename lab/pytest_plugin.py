"""cnilab as a pytest plugin (entry point pytest11 "cnilab"): scenarios against a running lab.

    pytest scenarios/ --lab-config lab.toml [--lab-name NAME] [--junitxml report.xml]

Fixtures: `lab` (the opened lab), `cluster` (pods on its nodes, attached to the network under
test), `nodes`, `node_host` (a testinfra host for a node) and `pod_factory` (makes pods and
deletes them after the test). When a test that used the lab fails, `lab logs` is collected
into a tarball whose path, with a short excerpt, lands in the report (and so in --junitxml).

Importing this module needs no lab: the options and fixtures only matter when a test asks.
"""
from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.api import Cluster, LabError, Node, Pod
from lab.testinfra_netns import register as register_netns_backend

register_netns_backend()  # so node.testinfra_url = netns://… resolves in testinfra.get_host

_LAB_KEY = pytest.StashKey[Any]()
EXCERPT_COMMANDS = (["ip", "-br", "addr"], ["ip", "route"])


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cnilab", "cnilab scenarios against a lab")
    group.addoption("--lab-config", default="lab.toml", metavar="PATH",
                    help="lab.toml of the lab to test (default: ./lab.toml)")
    group.addoption("--lab-name", default=None, metavar="NAME",
                    help="override the lab name from the config")
    group.addoption("--lab-logs-dir", default="lab-logs", metavar="DIR",
                    help="where `lab logs` tarballs of failing tests go (default: ./lab-logs)")


@pytest.fixture(scope="session")
def lab(pytestconfig: pytest.Config) -> Iterator[Any]:
    from lab.session import open_lab  # only scenarios pay for the config/provider imports

    path = Path(pytestconfig.getoption("--lab-config"))
    try:
        opened = open_lab(path, pytestconfig.getoption("--lab-name"))
    except LabError as e:
        pytest.fail(f"cannot open the lab from {path}:\n{e.describe()}", pytrace=False)
    pytestconfig.stash[_LAB_KEY] = opened
    try:
        yield opened
    finally:
        pytestconfig.stash[_LAB_KEY] = None
        opened.close()


@pytest.fixture(scope="session")
def cluster(lab: Any, pytestconfig: pytest.Config) -> Cluster:
    path = pytestconfig.getoption("--lab-config")
    try:
        if not lab.nodes():
            raise LabError(f"lab {lab.name} has no nodes")
        made: Cluster = lab.cluster()
        return made
    except LabError as e:
        pytest.fail(f"lab {lab.name} is not up: run `lab up -c {path}` first\n{e.describe()}",
                    pytrace=False)


@pytest.fixture(scope="session")
def nodes(cluster: Cluster) -> list[Node]:
    return cluster.nodes()


@pytest.fixture(scope="session")
def node_host() -> Callable[[Node], Any]:
    """node -> a pytest-testinfra host on it (netns://, paramiko://, … from node.testinfra_url)."""
    import testinfra

    hosts: dict[str, Any] = {}

    def get(node: Node) -> Any:
        if node.name not in hosts:
            hosts[node.name] = testinfra.get_host(node.testinfra_url)
        return hosts[node.name]

    return get


@pytest.fixture
def pod_factory(cluster: Cluster) -> Iterator[Callable[..., Pod]]:
    """pod_factory(node, prefix="pod") -> a new Pod on node; all are deleted after the test."""
    made: list[Pod] = []

    def make(node: Node | str, prefix: str = "pod") -> Pod:
        node_name = node if isinstance(node, str) else node.name
        pod = cluster.create_pod(f"{prefix}-{secrets.token_hex(3)}", node_name)
        made.append(pod)
        return pod

    yield make
    errors = []
    for pod in reversed(made):
        try:
            cluster.delete_pod(pod)
        except LabError as e:
            errors.append(e.describe())
    if errors:
        pytest.fail("deleting the test's pods failed:\n" + "\n".join(errors), pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
        item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    opened = item.config.stash.get(_LAB_KEY, None)
    uses_lab = "lab" in getattr(item, "fixturenames", ())
    if report.failed and report.when == "call" and opened is not None and uses_lab:
        _attach_lab_logs(item, report, opened)
    return report


def _attach_lab_logs(item: pytest.Item, report: pytest.TestReport, opened: Any) -> None:
    from lab.logs import write_tarball

    logs_dir = Path(item.config.getoption("--lab-logs-dir"))
    safe_id = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid)[-120:]
    lines = []
    try:
        tarball = write_tarball(opened.provider, opened.name, logs_dir / f"{safe_id}.tar.gz")
        item.user_properties.append(("lab_logs", str(tarball.resolve())))
        lines.append(f"lab logs: {tarball.resolve()}")
    except Exception as e:  # logs are a courtesy: never hide the test's own failure
        lines.append(f"collecting lab logs failed: {e}")
    try:
        for node in opened.nodes():
            for argv in EXCERPT_COMMANDS:
                res = node.run(argv, timeout=10)
                lines.append(f"[{node.name}] $ {' '.join(argv)}\n{res.stdout.rstrip()}")
    except Exception as e:
        lines.append(f"reading the nodes failed: {e}")
    text = "\n".join(lines)
    report.sections.append(("lab logs", text))
    item.user_properties.append(("lab_logs_excerpt", text[-4000:]))
