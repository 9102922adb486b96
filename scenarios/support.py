"""What the scenarios share besides fixtures: traffic probes, pod batches, the leak snapshot.

Plain functions and classes over the Cluster/Pod/Node interface; scenario modules import them
relatively (`from .support import …`), so the suites run from this repository and, installed,
as the package cnilab_scenarios (`pytest --pyargs cnilab_scenarios`).
"""
from __future__ import annotations

import contextlib
import json
import random
import re
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from lab.api import Cluster, CommandResult, LabError, Node, Pod
from lab.drivers.probe_record import Endpoint, ProbeRecorder
from lab.runtime.cni_runtime import check_refused

# A one-connection TCP echo server and a client that retries while the server starts: python3
# is on every node (the plugin needs it) and in the pod images the lab uses; nc is not.
TCP_SERVER = (
    "import socket,sys\n"
    "v6=sys.argv[2]=='6'; s=socket.socket(socket.AF_INET6 if v6 else socket.AF_INET)\n"
    "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
    "s.bind(('::' if v6 else '0.0.0.0',int(sys.argv[1]))); s.listen(1); c,_=s.accept()\n"
    "c.sendall(b'pong '+c.recv(100)); c.close()\n"
)
# One echo reply passes; with a deadline (-w), iputils ping keeps sending every 0.2 s until
# it has one, so a reply that comes at once ends it at once (a fixed -c 2 waited 0.2 s for
# the second each time). The deadline is 3 s: a new IPv6 address answers only after its
# duplicate address detection and the next neighbour solicitation, about 2 s after ADD.
PING = ("ping", "-c", "1", "-i", "0.2", "-w", "3")
# ICMP echo header plus the IP header: what a full-size ping must leave of the MTU
PING_OVERHEAD = {4: 28, 6: 48}
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
# -- families ---------------------------------------------------------------------------------
def family_of(ip: str) -> int:
    return 6 if ":" in ip else 4


def address(pod: Pod, family: int) -> str:
    """The pod's address in family, or a failure saying the plugin gave it none."""
    ips = getattr(pod, "ips", None) or {family_of(pod.ip): pod.ip}
    if family not in ips:
        raise AssertionError(f"pod {pod.name} on {pod.node} has no IPv{family} address on "
                             f"{pod.ifname} (it has {', '.join(ips.values()) or 'none'}): the "
                             "lab runs this family, the plugin did not give it")
    return ips[family]


def lab_families(config: Any) -> tuple[int, ...]:
    """The families the lab under test runs, read from its config at collection time."""
    from pathlib import Path

    try:
        from lab.config import load_config

        lab = load_config(Path(config.getoption("--lab-config")),
                          config.getoption("--lab-name"))
    except (LabError, ValueError, OSError):
        return (4,)     # the lab fixture will say what is wrong with the config, once
    return lab.network.families


# -- traffic ------------------------------------------------------------------------------------
# the suites name their pods <role>-<random hex> (make_pods, pod_factory)
_RANDOM_SUFFIX = re.compile(r"-[0-9a-f]{4,6}$")


def endpoint(end: Pod | Node) -> Endpoint:
    """A probe's end as the matrix shows it: a pod by its role (its name without the suites'
    random suffix, so the pods one role gets in two modules are one row) on its node."""
    pod_node = getattr(end, "node", None)
    if isinstance(pod_node, str):
        return Endpoint(_RANDOM_SUFFIX.sub("", end.name) or end.name, pod_node)
    return Endpoint(end.name, end.name, is_pod=False)


@dataclass
class Probes:
    """The traffic probes. The verdicts `pod_to_pod` and `node_to_pod` reach go to the run's
    recorder (the end-of-run connectivity matrix) when there is one."""

    node_host: Callable[[Node], Any]
    recorder: ProbeRecorder | None = None

    def unreachable(self, cluster: Cluster, src: Pod | Node, ip: str, what: str,
                    dst: Pod | None = None) -> str:
        """The failure message of a probe that got nothing back: what, then why."""
        return f"{what}\n{diagnose(cluster, src, ip, dst)}"

    def record(self, src: Pod | Node, dst: Pod, family: int, kind: str, passed: bool,
               why: str = "") -> None:
        if self.recorder is not None:
            self.recorder.record(endpoint(src), endpoint(dst), family, kind, passed, why)

    def pod_to_pod(self, cluster: Cluster, src: Pod, dst: Pod, family: int,
                   kind: str = "icmp") -> str:
        """src reaches dst over ICMP or TCP ("tcp": an echo both ways): "" if it did, else
        what failed and the diagnosis; recorded either way."""
        ip = address(dst, family)
        what = f"{src.name}@{src.node} -> {dst.name}@{dst.node} ({ip})"
        if ip in _addresses_of(src):    # it would answer its own ping: nothing reached dst
            why = (f"{what}: {src.name} holds {ip} itself, so no probe can reach "
                   f"{dst.name}\ndiagnosis: {_shared_address(cluster, ip, dst)}")
            self.record(src, dst, family, kind, False, why.partition("\n")[2])
            return why
        if kind == "tcp":
            passed = self.tcp_echo(src, dst, family=family) == f"pong from-{src.name}"
            failed = f"TCP {what} failed"
        else:
            passed = self.ping(src, ip).ok
            failed = f"{what}: no ICMP reply"
        why = "" if passed else self.unreachable(cluster, src, ip, failed, dst)
        if passed and dst.node != src.node:
            why = _answered_here(cluster, _node_of(cluster, src.node), ip, dst,
                                 f"{kind.upper()} {what}")
            passed = not why
        self.record(src, dst, family, kind, passed, why.partition("\n")[2])
        return why

    def node_to_pod(self, cluster: Cluster, node: Node, pod: Pod, family: int) -> str:
        """node reaches pod over ICMP: "" if it did, else what failed and the diagnosis."""
        ip = address(pod, family)
        what = f"{node.name} -> {pod.name}@{pod.node} ({ip})"
        passed = self.node_ping(node, ip).succeeded
        why = "" if passed else self.unreachable(cluster, node, ip, f"{what}: no reply", pod)
        if passed and pod.node != node.name:
            why = _answered_here(cluster, node, ip, pod, what)
            passed = not why
        self.record(node, pod, family, "icmp", passed, why.partition("\n")[2])
        return why

    @staticmethod
    def both_ways(a: Pod, b: Pod, check: Callable[[Pod, Pod], str]) -> None:
        """check(src, dst) -> why it failed ("" if it did not), a -> b and b -> a at once."""
        failed = failures_at_once(check, ((a, b), (b, a)), workers=2)
        expect(not failed, "\n".join(failed))

    def full_size(self, cluster: Cluster, a: Pod, b: Pod, family: int) -> None:
        """A full-size, don't-fragment packet a -> b passes (after a small one, so a loss is
        about the MTU)."""
        mtu, ip = cluster.mtu or 1500, address(b, family)
        what = f"{a.name}@{a.node} -> {b.name}@{b.node} ({ip})"
        unreachable = self.pod_to_pod(cluster, a, b, family)
        expect(not unreachable, unreachable.replace(
            "no ICMP reply", "no reply even to small packets, so this is not about the MTU", 1))
        passed = self.ping(a, ip, mtu=mtu).ok
        why = "" if passed else diagnose_mtu(cluster, a, ip, mtu)
        self.record(a, b, family, "mtu", passed, why)
        expect(passed, f"a {mtu}-byte DF packet {what} was lost: the pod MTU is larger than "
                       f"the path\n{why}")

    @staticmethod
    def ping(pod: Pod, ip: str, *, mtu: int | None = None) -> CommandResult:
        """ICMP echo; with mtu, packets that fill it exactly and must not be fragmented."""
        argv = [*PING]
        if mtu is not None:
            argv += ["-M", "do", "-s", str(mtu - PING_OVERHEAD[family_of(ip)])]
        return pod.exec([*argv, ip], timeout=10)

    def node_ping(self, node: Node, ip: str) -> Any:
        return self.node_host(node).run(" ".join(PING) + " %s", ip)

    @staticmethod
    def tcp_echo(client: Pod, server: Pod, *, family: int = 4, wait: float = 3.0) -> str:
        """Opens a TCP connection client -> server and returns what came back ("" on failure)."""
        port = str(random.randint(20000, 29999))
        started = server.exec(["sh", "-c", 'timeout 15 python3 -c "$0" "$1" "$2" >/dev/null '
                                           '2>&1 </dev/null & echo $!', TCP_SERVER, port,
                               str(family)])
        if not started.ok:
            raise LabError("could not start the TCP server", where=server.name,
                           output=started.stderr)
        try:
            token = f"from-{client.name}"
            res = client.exec(["python3", "-c", TCP_CLIENT, address(server, family), port,
                               str(wait), token], timeout=wait + 10)
            if res.rc == 127:    # no python3 in the image: say so, not "TCP failed"
                raise LabError(res.stderr.strip().splitlines()[0], where=client.name)
            return res.stdout.strip() if res.ok else ""
        finally:
            server.exec(["kill", started.stdout.strip()])


# -- why traffic did not get through -----------------------------------------------------------
def _first_line(res: CommandResult) -> str:
    text = (res.stdout or res.stderr).strip()
    return text.splitlines()[0] if text else f"(rc={res.rc}, no output)"


def _node_of(cluster: Cluster, name: str) -> Node:
    return next(n for n in cluster.nodes() if n.name == name)


def _owner_of(cluster: Cluster, ip: str) -> Node | None:
    """The node whose pod subnet holds ip (the harness knows every node's)."""
    import ipaddress

    for node in cluster.nodes():
        try:
            subnet = cluster.pod_subnet(node.name, family_of(ip))
            if ipaddress.ip_address(ip) in ipaddress.ip_network(subnet):
                return node
        except (LabError, ValueError):
            continue
    return None


def require_check(cluster: Cluster) -> None:
    """Skips a CHECK scenario for configs before CNI 0.4.0: a runtime refuses CHECK there
    (libcni), so there is nothing of the plugin's to judge."""
    if check_refused(cluster.cni_version):
        pytest.skip(f"not applicable: CHECK exists from CNI 0.4.0, the config says "
                    f"{cluster.cni_version}")


def expect(condition: Any, message: str) -> None:
    """A failed check as its message alone: no `assert False` and no repr of the inputs."""
    if not condition:
        pytest.fail(message, pytrace=False)


_FORWARDING = {4: "net.ipv4.ip_forward", 6: "net.ipv6.conf.all.forwarding"}


def _forwarding_off(node: Node, family: int) -> bool:
    res = node.run(["sysctl", "-n", _FORWARDING[family]], timeout=10)
    return res.ok and res.stdout.strip() == "0"


def _link_down(run: Callable[..., CommandResult], dev: str) -> bool:
    out = run(["ip", "-o", "link", "show", "dev", dev], timeout=10).stdout
    flags = out.split("<", 1)[-1].split(">", 1)[0].split(",") if "<" in out else []
    return bool(out) and "UP" not in flags


def _route_dev(route_get: str) -> str:
    words = route_get.split()
    return words[words.index("dev") + 1] if "dev" in words[:-1] else ""


def _pod_side(src: Pod, dst_ip: str, evidence: list[str]) -> str:
    """Why the pod cannot send to dst_ip itself: no route, or its interface down."""
    family = family_of(dst_ip)
    got = src.exec(["ip", "route", "get", dst_ip], timeout=10)
    evidence.append(f"[pod {src.name}] ip route get {dst_ip}: {_first_line(got)}")
    if _link_down(src.exec, src.ifname):
        return f"pod {src.name}'s {src.ifname} is down"
    if not got.ok:
        routes = src.exec(["ip", "-o", f"-{family}", "route", "show"], timeout=10).stdout
        return (f"pod {src.name} has no route to {dst_ip} (its IPv{family} routes: "
                + ("; ".join(r.strip() for r in routes.splitlines()) or "none") + ")")
    words = got.stdout.split()
    gateway = words[words.index("via") + 1] if "via" in words[:-1] else ""
    if gateway:
        neigh = src.exec(["ip", "neigh", "show", gateway], timeout=10).stdout
        if "FAILED" in neigh or "INCOMPLETE" in neigh:
            return f"pod {src.name} cannot resolve its gateway {gateway} ({neigh.strip()})"
    return ""


def _node_side(host: Node, dst_ip: str, evidence: list[str], *, role: str) -> str:
    """Why host does not pass packets on to dst_ip: forwarding, no route, a device down."""
    family = family_of(dst_ip)
    if role == "via" and _forwarding_off(host, family):
        evidence.append(f"[{host.name}] {_FORWARDING[family]} = 0")
        return f"{host.name} has forwarding off ({_FORWARDING[family]}=0)"
    got = host.run(["ip", "route", "get", dst_ip], timeout=10)
    evidence.append(f"[{host.name}] ip route get {dst_ip}: {_first_line(got)}")
    if not got.ok:
        return f"{host.name} has no route to {dst_ip}"
    dev = _route_dev(got.stdout)
    if dev and _link_down(host.run, dev):
        return f"{host.name}'s route to {dst_ip} leaves by {dev}, which is down"
    return ""


def _addresses_of(pod: Pod) -> set[str]:
    return {pod.ip, *(getattr(pod, "ips", None) or {}).values()}


def _shared_address(cluster: Cluster, dst_ip: str, dst: Pod | None) -> str:
    """Other pods holding dst_ip too: one address handed out twice (every node's IPAM given
    the same range, as the blog post's ptp-conf does), so packets go to the wrong pod."""
    with contextlib.suppress(LabError):
        holders = sorted(f"{p.name} on {p.node}" for p in cluster.pods()
                         if dst_ip in _addresses_of(p)
                         and not (dst is not None and p.name == dst.name))
        if holders:
            mine = f"pod {dst.name} on {dst.node}" if dst is not None else "its pod"
            return (f"{dst_ip} is {mine}'s and also {', '.join(holders)}'s: one address "
                    "handed out twice (does every node's IPAM get the same range?)")
    return ""


# sh printing the device `ip route get "$1"` leaves by, then (after a line "@") its `ip -d link`
# line and its addresses: one node round trip for what _kept_on_this_node needs to know
_WAY_OUT = ('dev=$(ip route get "$1" 2>/dev/null | awk \'{for (i = 1; i < NF; i++) '
            'if ($i == "dev") { print $(i + 1); exit }}\'); [ -n "$dev" ] || exit 0; '
            'echo "$dev"; echo @; ip -o -d link show dev "$dev"; ip -o addr show dev "$dev"')


def _kept_on_this_node(host: Node, dst_ip: str, dst: Pod | None, evidence: list[str]) -> str:
    """host routes dst_ip (a pod on another node) into one of its own veths."""
    if dst is None or dst.node == host.name:
        return ""
    dev, _, shown = host.run(["sh", "-c", _WAY_OUT, "sh", dst_ip],
                             timeout=10).stdout.partition("\n@\n")
    link, _, held = shown.partition("\n")
    if not dev.strip() or " veth " not in f" {link} ":
        return ""
    # a node's own way out may be a veth too (a netns node's eth0): it holds the node's address
    if host.address and f" {host.address}/" in held:
        return ""
    dev = dev.strip()
    evidence.append(f"[{host.name}] {dst_ip} leaves by {dev}, a local veth")
    return (f"{host.name} routes {dst_ip} (pod {dst.name} on {dst.node}) into its own veth "
            f"{dev}: a route of one of its pods covers that address (do the nodes' pods share "
            "one range?)")


def _answered_here(cluster: Cluster, host: Node, ip: str, dst: Pod, what: str) -> str:
    """A reply to a pod on another node that came from host's own side (its route for ip
    leads into one of its veths): not dst's. "" when the way leads off the node."""
    evidence: list[str] = []
    cause = _kept_on_this_node(host, ip, dst, evidence)
    if not cause:
        return ""
    shared = _shared_address(cluster, ip, dst)
    return (f"{what}: a reply came, but not from {dst.name}: {host.name} keeps {ip} on its "
            f"own side\ndiagnosis: {shared or cause}\n  " + "\n  ".join(evidence))


def diagnose(cluster: Cluster, src: Pod | Node, dst_ip: str, dst: Pod | None = None) -> str:
    """The likely cause of no traffic src -> dst_ip, looked for on the way the packet goes (the
    sending pod, its node, the receiving node, the receiving pod and the way back), then the
    evidence: printed in the failing scenario's message. A cause is only said when a probe
    shows it; with none found the message says so, never that things look right."""
    is_pod = hasattr(src, "exec")
    host = _node_of(cluster, src.node) if is_pod else src     # type: ignore[union-attr]
    owner = _owner_of(cluster, dst_ip)
    family = family_of(dst_ip)
    evidence: list[str] = []
    if is_pod:
        pod = src      # type: ignore[assignment]
        src_ip = address(pod, family) if family in (getattr(pod, "ips", None) or {}) \
            else pod.ip  # type: ignore[union-attr]
        cause = _pod_side(pod, dst_ip, evidence)  # type: ignore[arg-type]
    else:
        src_ip, cause = host.address, ""      # type: ignore[union-attr]
    cause = cause or _node_side(host, dst_ip, evidence, role="via" if is_pod else "from")
    cause = (cause or _shared_address(cluster, dst_ip, dst)
             or _kept_on_this_node(host, dst_ip, dst, evidence))
    if not cause and owner is not None and owner.name != host.name:
        subnet = cluster.pod_subnet(owner.name, family)
        specific = host.run(["ip", "-o", "route", "show", "match", dst_ip], timeout=10).stdout
        if not [r for r in specific.splitlines() if not r.startswith("default")]:
            cause = f"{host.name} has no route to {owner.name}'s pod subnet {subnet}" + (
                " (only its default route)" if specific.strip() else "")
        evidence.append(f"[{host.name}] routes matching {dst_ip}: "
                        + ("; ".join(specific.splitlines()) or "none"))
    neigh = host.run(["ip", "neigh", "show"], timeout=10).stdout.strip().splitlines()
    failed = [n for n in neigh if "FAILED" in n or "INCOMPLETE" in n]
    if failed:
        evidence.append(f"[{host.name}] unresolved neighbours: " + "; ".join(failed[:5]))
        cause = cause or f"{host.name} cannot resolve {failed[0].split()[0]}"
    if owner is not None and owner.name != host.name:
        cause = cause or _node_side(owner, dst_ip, evidence, role="via")
        back = owner.run(["ip", "route", "get", src_ip], timeout=10)
        evidence.append(f"[{owner.name}] ip route get {src_ip} (the way back): "
                        + _first_line(back))
        if not back.ok and not cause:
            cause = f"{owner.name} has no route back to {src_ip}"
    if dst is not None and not cause:
        if _link_down(dst.exec, dst.ifname):
            cause = f"pod {dst.name}'s {dst.ifname} is down"
        else:
            back = dst.exec(["ip", "route", "get", src_ip], timeout=10)
            evidence.append(f"[pod {dst.name}] ip route get {src_ip} (the way back): "
                            + _first_line(back))
            if not back.ok:
                cause = f"pod {dst.name} has no route back to {src_ip}"
    head = (f"diagnosis: {cause}" if cause else
            "diagnosis: no cause found: routes, links, forwarding and neighbours on the way "
            "there and back show none (a filter or the datapath itself?)")
    return head + "\n  " + "\n  ".join(evidence)


def diagnose_mtu(cluster: Cluster, src: Pod, dst_ip: str, mtu: int) -> str:
    """Where a full-size DF packet cannot pass: the first device on the way with a smaller
    MTU than the pod's (the pod's own, its node's exit, the receiving node's exit)."""
    family = family_of(dst_ip)
    hops: list[tuple[str, Callable[..., CommandResult], str]] = [
        (f"pod {src.name}", src.exec, dst_ip),
        (_node_of(cluster, src.node).name, _node_of(cluster, src.node).run, dst_ip)]
    owner = _owner_of(cluster, dst_ip)
    if owner is not None and owner.name != src.node:
        hops.append((owner.name, owner.run, dst_ip))
    seen = []
    for where, run, ip in hops:
        dev = _route_dev(run(["ip", "route", "get", ip], timeout=10).stdout)
        link = run(["ip", "-o", "link", "show", "dev", dev], timeout=10).stdout if dev else ""
        match = re.search(r"\bmtu (\d+)", link)
        if match:
            seen.append(f"[{where}] {dev} mtu {match.group(1)}")
            if int(match.group(1)) < mtu:
                return (f"diagnosis: {where}'s {dev} has MTU {match.group(1)}, smaller than the "
                        f"pod MTU {mtu} (IPv{family})\n  " + "\n  ".join(seen))
    return ("diagnosis: no device on the way has a smaller MTU than " + str(mtu)
            + " (a tunnel's overhead or a path MTU beyond the nodes?)\n  " + "\n  ".join(seen))


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


def failures_at_once(check: Callable[..., str], cases: Iterable[tuple[Any, ...]],
                     workers: int = 4) -> list[str]:
    """check(*case) for every case, a few at a time (probes between different endpoints do
    not disturb each other): why each that failed did, in the cases' order."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [why for why in pool.map(lambda case: check(*case), cases) if why]


# -- shared pods ----------------------------------------------------------------------------------
def make_pods(cluster: Cluster, wanted: list[tuple[str, str]]) -> list[Pod]:
    suffix = f"{random.randrange(16**4):04x}"
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(cluster.create_pod, f"{prefix}-{suffix}", node)
                   for prefix, node in wanted]
        made, errors = [], []
        for fut in futures:
            try:
                made.append(fut.result())
            except BaseException as e:   # a LabError, or pytest.fail from JudgedCluster
                errors.append(e)
    if errors:
        delete_pods(cluster, made)
        raise errors[0]
    return made


def delete_pods(cluster: Cluster, pods: list[Pod]) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(cluster.delete_pod, pods))


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
    pod_routes: frozenset[str]      # host routes to single pod addresses, v4 and v6


def pod_host_routes(cluster: Cluster, node: Node) -> frozenset[str]:
    """The node's routes to one pod address (a /32 or /128 inside a pod subnet): each goes
    with its pod, so one left after the suite is a leak (a route to a peer's subnet is not)."""
    import ipaddress

    subnets = []
    for other in cluster.nodes():
        for family in cluster.families:
            with contextlib.suppress(LabError, ValueError):
                subnets.append(ipaddress.ip_network(cluster.pod_subnet(other.name, family)))
    found = set()
    for family in cluster.families:
        listed = node.run(["ip", "-o", f"-{family}", "route", "show"], timeout=10).stdout
        for line in listed.splitlines():
            words = line.split()
            if "proto kernel" in line:    # an address's own route (a VTEP's), not a pod's
                continue
            dst = words[0] if words else ""
            with contextlib.suppress(ValueError):
                net = ipaddress.ip_network(dst, strict=False)
                inside = any(sub.version == net.version and net.subnet_of(sub)
                             for sub in subnets)
                if net.prefixlen == net.max_prefixlen and inside:
                    found.add(" ".join(words[:3]))
    return frozenset(found)


def snapshot(cluster: Cluster) -> dict[str, NodeSnapshot]:
    """What this lab holds on each node: its pods' namespaces only (a shared host also holds
    other labs' and other people's, which are not this suite's to judge)."""
    return {node.name: NodeSnapshot(frozenset(cluster.host_interfaces(node.name)),
                                    frozenset(cluster.ipam_leases(node.name)),
                                    frozenset(cluster.pod_namespaces(node.name)),
                                    pod_host_routes(cluster, node))
            for node in cluster.nodes()}
