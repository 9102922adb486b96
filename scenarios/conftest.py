"""Plumbing for the scenarios: shared pods, traffic probes, and the leak audit's baseline.

The scenarios talk only to the Cluster/Pod/Node interface and to testinfra hosts, so the same
files run on the netns lab and on Kubernetes. Test names say what they cross: `same_node` or
`cross_node` is in every name where it matters (`pytest scenarios -k cross_node`).
"""
from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from lab.api import Cluster, CommandResult, LabError, Node, Pod

# A one-connection TCP echo server and a client that retries while the server starts: python3
# is on every node (the plugin needs it) and in the pod images the lab uses; nc is not.
TCP_SERVER = (
    "import socket,sys\n"
    "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
    "s.bind(('0.0.0.0',int(sys.argv[1]))); s.listen(1); c,_=s.accept()\n"
    "c.sendall(b'pong '+c.recv(100)); c.close()\n"
)
TCP_CLIENT = (
    "import socket,sys,time\n"
    "end=time.time()+float(sys.argv[3]); err=None\n"
    "while time.time()<end:\n"
    "    try:\n"
    "        c=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=1)\n"
    "        c.sendall(sys.argv[4].encode()); print(c.recv(100).decode()); sys.exit(0)\n"
    "    except OSError as e:\n"
    "        err=e; time.sleep(0.1)\n"
    "sys.exit('no TCP connection: %s' % err)\n"
)
AUDIT_MODULE = "test_leak_audit.py"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The leak audit judges what every other scenario left behind: it runs last."""
    items.sort(key=lambda item: item.path.name == AUDIT_MODULE)


# -- traffic ------------------------------------------------------------------------------------
@dataclass
class Probes:
    node_host: Callable[[Node], Any]

    @staticmethod
    def ping(pod: Pod, ip: str, *, size: int | None = None) -> CommandResult:
        """ICMP echo (any of two replies counts: a loaded CI machine may be slow to schedule
        the first); with size, full-size packets that must not be fragmented."""
        argv = ["ping", "-c", "2", "-i", "0.2", "-W", "2"]
        if size is not None:
            argv += ["-M", "do", "-s", str(size)]
        return pod.exec([*argv, ip], timeout=10)

    def node_ping(self, node: Node, ip: str) -> Any:
        return self.node_host(node).run("ping -c 2 -i 0.2 -W 2 %s", ip)

    @staticmethod
    def tcp_echo(client: Pod, server: Pod, *, wait: float = 3.0) -> str:
        """Opens a TCP connection client -> server and returns what came back ("" on failure)."""
        port = str(random.randint(20000, 29999))
        started = server.exec(["sh", "-c", 'timeout 15 python3 -c "$0" "$1" >/dev/null 2>&1 '
                                           '</dev/null & echo $!', TCP_SERVER, port])
        if not started.ok:
            raise LabError("could not start the TCP server", where=server.name,
                           output=started.stderr)
        try:
            token = f"from-{client.name}"
            res = client.exec(["python3", "-c", TCP_CLIENT, server.ip, port, str(wait), token],
                              timeout=wait + 10)
            return res.stdout.strip() if res.ok else ""
        finally:
            server.exec(["kill", started.stdout.strip()])


@pytest.fixture(scope="session")
def probe(node_host: Callable[[Node], Any]) -> Probes:
    return Probes(node_host)


def iperf3_gbits(client_exec: Callable[..., CommandResult], server_exec: Callable[..., Any],
                 server_ip: str) -> float:
    """One 1 s iperf3 stream; the server is started and stopped by pid, never by name."""
    port = str(random.randint(30000, 39999))
    pidfile = f"/tmp/cnilab-iperf3-{port}.pid"
    server_exec(["iperf3", "-s", "-1", "-D", "-p", port, "-I", pidfile])
    try:
        # `iperf3 -D` returns before the server listens: a refused first try is a race, not a
        # verdict, so the client tries three times before reporting nothing moved.
        for attempt in range(3):
            res = client_exec(["iperf3", "-c", server_ip, "-p", port, "-t", "1", "-J",
                               "--connect-timeout", "2000"], timeout=20)
            try:
                received = json.loads(res.stdout)["end"]["sum_received"]["bits_per_second"]
                return float(received) / 1e9
            except (ValueError, KeyError, TypeError):
                # iperf3 reports a failed connection as JSON without "sum_received"
                time.sleep(0.5 * (attempt + 1))
        return 0.0
    finally:
        server_exec(["sh", "-c", 'test -f "$0" && kill "$(cat "$0")"; rm -f "$0"', pidfile])


# -- shared pods ----------------------------------------------------------------------------------
def _make_pods(cluster: Cluster, wanted: list[tuple[str, str]]) -> list[Pod]:
    suffix = f"{random.randrange(16**4):04x}"
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(cluster.create_pod, f"{prefix}-{suffix}", node)
                   for prefix, node in wanted]
        made, errors = [], []
        for fut in futures:
            try:
                made.append(fut.result())
            except LabError as e:
                errors.append(e)
    if errors:
        _delete_pods(cluster, made)
        raise errors[0]
    return made


def _delete_pods(cluster: Cluster, pods: list[Pod]) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(cluster.delete_pod, pods))


@pytest.fixture(scope="module")
def pod_per_node(cluster: Cluster) -> Iterator[dict[str, Pod]]:
    """One pod on every node, shared by a module's tests (made in parallel, deleted after)."""
    nodes = [n.name for n in cluster.nodes()]
    pods = _make_pods(cluster, [(f"on-{name}"[:20].rstrip("-"), name) for name in nodes])
    try:
        yield dict(zip(nodes, pods))
    finally:
        _delete_pods(cluster, pods)


@pytest.fixture(scope="module")
def neighbours(cluster: Cluster) -> Iterator[tuple[Pod, Pod]]:
    """Two pods on the first node."""
    first = cluster.nodes()[0].name
    a, b = _make_pods(cluster, [("left", first), ("right", first)])
    try:
        yield a, b
    finally:
        _delete_pods(cluster, [a, b])


@pytest.fixture(scope="module")
def two_nodes(cluster: Cluster) -> tuple[Node, Node]:
    nodes = cluster.nodes()
    if len(nodes) < 2:
        pytest.skip("cross-node scenarios need a lab with at least 2 nodes")
    return nodes[0], nodes[1]


def interface_mtu(pod: Pod) -> int:
    out = pod.exec(["ip", "-o", "link", "show", "dev", pod.ifname])
    match = re.search(r"\bmtu (\d+)", out.stdout)
    assert out.ok and match, f"{pod.ifname} not found in pod {pod.name}: {out.stderr}"
    return int(match.group(1))


# -- the leak audit's baseline ------------------------------------------------------------------
@dataclass(frozen=True)
class NodeSnapshot:
    host_interfaces: frozenset[str]
    leases: frozenset[str]
    namespaces: frozenset[str]


def snapshot(cluster: Cluster, node_host: Callable[[Node], Any]) -> dict[str, NodeSnapshot]:
    shots = {}
    for node in cluster.nodes():
        names = node_host(node).run("ip netns list").stdout.split("\n")
        shots[node.name] = NodeSnapshot(
            frozenset(cluster.host_interfaces(node.name)),
            frozenset(cluster.ipam_leases(node.name)),
            frozenset(line.split()[0] for line in names if line.strip()))
    return shots


@pytest.fixture(scope="session", autouse=True)
def leak_baseline(cluster: Cluster, node_host: Callable[[Node], Any]
                  ) -> dict[str, NodeSnapshot]:
    """What the nodes held before the first scenario: the audit compares against it."""
    return snapshot(cluster, node_host)
