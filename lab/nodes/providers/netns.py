"""Nodes as network namespaces on this host, joined by a lab switch that lives in its own netns.

    cnilab-<lab>-sw      a bridge "br0" with one veth per node (the host's network is untouched)
    cnilab-<lab>-<node>  a node: "eth0" with its underlay IP, lo up, ip_forward=1
    cnilab-<lab>-pod-*   pods made by the scenario driver (removed by destroy too)

State lives in the namespaces themselves: nodes are found by listing /run/netns and reading
their addresses, so nothing can go stale. Everything is done with `ip -batch` (one process per
namespace, run in parallel): importing pyroute2 alone costs more than bringing up three nodes.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lab.api import CommandResult, LabError, Node, NodeStatus
from lab.config import LabConfig
from lab.nodes.local_run import run_local

NETNS_DIR = Path("/run/netns")
HOST_ROOT = Path("/var/lib/cnilab")   # node state dirs: the nodes share the host's filesystem
SWITCH = "sw"
POD_PREFIX = "pod-"
BRIDGE = "br0"
NODE_IF = "eth0"
IP_TIMEOUT = 30.0
PUT_TIMEOUT = 120.0     # a copy of a plugin onto a local disk


def ns_prefix(lab: str) -> str:
    return f"cnilab-{lab}-"


def node_ns(lab: str, node: str) -> str:
    return f"{ns_prefix(lab)}{node}"


def switch_port(node: str) -> str:
    """The switch-side veth of a node: readable when it fits IFNAMSIZ, a stable hash otherwise."""
    name = f"v-{node}"
    return name if len(name) <= 15 else "v-" + hashlib.sha1(node.encode()).hexdigest()[:13]


def lab_namespaces(lab: str) -> list[str]:
    """Every namespace of this lab. Lab names hold no '-', so no other lab's names match."""
    prefix = ns_prefix(lab)
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(prefix) and len(n) > len(prefix))


def _ip_batch(commands: Sequence[str], netns: str | None = None,
              force: bool = False) -> subprocess.Popen[str]:
    argv = ["ip", *(["-n", netns] if netns else []), *(["-force"] if force else []),
            "-batch", "-"]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdin is not None
    # Batches are small (far below a pipe's buffer): write them whole now so every namespace's
    # batch runs in parallel; communicate() later must not touch the closed stdin.
    proc.stdin.write("".join(c + "\n" for c in commands))
    proc.stdin.close()
    proc.stdin = None
    return proc


def _ip(args: Sequence[str], netns: str | None = None) -> subprocess.Popen[str]:
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_all(procs: dict[str, subprocess.Popen[str]], what: str) -> dict[str, str]:
    """Waits for every batch; raises one LabError naming each namespace that failed."""
    outputs, failures = {}, []
    for where, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=IP_TIMEOUT)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            rc, out, err = -1, "", f"timed out after {IP_TIMEOUT:.0f}s"
        if rc != 0:
            failures.append(f"{where}: {err.strip() or out.strip()}")
        outputs[where] = out
    if failures:
        raise LabError(f"{what} failed", where=", ".join(f.split(":")[0] for f in failures),
                       output="\n".join(failures),
                       hint="`lab down` removes a partial lab; then `lab up` again")
    return outputs


@dataclass
class NetnsNode:
    """A node that is a network namespace. Commands enter only its network namespace
    (`nsenter --net`): `ip netns exec` would also give them a private mount namespace, and a pod
    namespace a runtime makes from there (`ip netns add`) would never be mounted for the host."""

    name: str
    address: str
    state_dir: str
    netns: str

    # Commands are local subprocesses: with no input given they read our own stdin.
    inherits_stdin = True

    def run(self, argv: Sequence[str], *, input: str | bytes | None = None,
            timeout: float = 60,
            env: dict[str, str] | None = None) -> CommandResult:
        full = ("nsenter", f"--net={NETNS_DIR / self.netns}", "--", *argv)
        return run_local(full, argv, where=self.name, input=input, timeout=timeout, env=env)

    def put_file(self, local: Path, remote: str, mode: int = 0o755) -> None:
        """Copies onto the host filesystem (shared by every netns node); atomic, so a plugin
        being executed is never seen half-written. The copy is written by a `cp` of its own:
        a descriptor we held open for writing would be inherited by any child another thread
        forks meanwhile, and running the fresh file would fail with ETXTBSY until that child
        execs (nodes copy and run their hooks in parallel)."""
        target = Path(remote)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp{os.getpid()}.{threading.get_ident()}")
        copy = ["cp", "--", str(local), str(tmp)]
        done = run_local(copy, copy, where=self.name, timeout=PUT_TIMEOUT)
        if not done.ok:     # a timeout too: it says so in stderr
            raise LabError(f"cannot copy {local} to {target}", where=self.name,
                           output=done.stderr)
        os.chmod(tmp, mode)
        os.replace(tmp, target)

    @property
    def testinfra_url(self) -> str:
        return f"netns://{self.netns}"


class NetnsProvider:
    """Makes and removes the namespaces of one lab; safe to repeat, never touches other labs."""

    name = "netns"

    def __init__(self, config: LabConfig) -> None:
        self.config = config
        self.lab = config.name
        self.host_root = HOST_ROOT / self.lab

    def _node(self, name: str, address: str) -> NetnsNode:
        return NetnsNode(name=name, address=address, state_dir=str(self.host_root / name),
                         netns=node_ns(self.lab, name))

    # -- Provider ----------------------------------------------------------------------------------
    def provision(self) -> list[Node]:
        if os.geteuid() != 0:
            raise LabError("the netns provider needs root (network namespaces, veths)",
                           hint="run `sudo lab up`")
        sw = node_ns(self.lab, SWITCH)
        wanted = {n.name: node_ns(self.lab, n.name) for n in self.config.nodes}
        existing = set(lab_namespaces(self.lab))
        missing = [ns for ns in (sw, *wanted.values()) if ns not in existing]
        if missing:
            _wait_all({"host": _ip_batch([f"netns add {ns}" for ns in missing])},
                      "creating namespaces")

        ports = self._switch_ports(sw) if sw in existing else set()
        # A node namespace made just now has no eth0, so its old switch port (if still listed:
        # the kernel removes a deleted namespace's veths asynchronously) is stale: remove it.
        stale = [switch_port(node) for node, ns in wanted.items()
                 if ns in missing and switch_port(node) in ports]
        if stale:
            _ip_batch([f"link del {port}" for port in stale], sw, force=True).communicate(
                timeout=IP_TIMEOUT)   # "Cannot find device" only means the kernel was first
            ports -= set(stale)
        switch_cmds = [] if BRIDGE in ports else [f"link add {BRIDGE} type bridge"]
        switch_cmds += [f"link set {BRIDGE} up", "link set lo up"]
        for node, ns in wanted.items():
            port = switch_port(node)
            if port not in ports:
                switch_cmds.append(f"link add {port} type veth peer name {NODE_IF} netns {ns}")
            switch_cmds.append(f"link set {port} master {BRIDGE} up")
        _wait_all({SWITCH: _ip_batch(switch_cmds, sw)}, "wiring the lab switch")

        underlays = self.config.network.underlay_nets
        by_family = self.config.underlay_addresses_by_family()
        batches = {}
        for node, ns in wanted.items():
            (self.host_root / node).mkdir(parents=True, exist_ok=True)
            cmds = ["link set lo up"]
            for version, net in underlays.items():
                # v6: no DAD, the address is usable at once (the lab chose it: no clash)
                flags = " nodad" if version == 6 else ""
                cmds.append(f"addr replace {by_family[version][node]}/{net.prefixlen} "
                            f"dev {NODE_IF}{flags}")
            cmds.append(f"link set {NODE_IF} up")
            # a node routes for its pods, like any CNI node (v6 forwarding only where the
            # lab has v6: the plugin under test turns it on itself when it needs it)
            cmds.append(f"netns exec {ns} sysctl -qw net.ipv4.ip_forward=1")
            batches[node] = _ip_batch(cmds, ns)
        _wait_all(batches, "configuring nodes")
        addresses = self.config.underlay_addresses()
        return [self._node(n.name, str(addresses[n.name])) for n in self.config.nodes]

    def _switch_ports(self, sw: str) -> set[str]:
        out = _wait_all({SWITCH: _ip(["-j", "link", "show"], sw)}, "reading the lab switch")
        return {link["ifname"] for link in json.loads(out[SWITCH] or "[]")}

    def _node_namespaces(self) -> dict[str, str]:
        prefix = ns_prefix(self.lab)
        found = {}
        for ns in lab_namespaces(self.lab):
            name = ns[len(prefix):]
            if name != SWITCH and not name.startswith(POD_PREFIX):
                found[name] = ns
        return found

    def _addresses(self, namespaces: dict[str, str]) -> dict[str, str]:
        """Each node's primary underlay address, read from its eth0 ("" when it has none)."""
        family = f"-{self.config.network.underlay_net.version}"
        procs = {name: _ip(["-j", family, "addr", "show", "dev", NODE_IF, "scope", "global"],
                           ns)
                 for name, ns in namespaces.items()}
        result = {}
        for name, proc in procs.items():
            out, _ = proc.communicate(timeout=IP_TIMEOUT)
            try:
                infos = json.loads(out or "[]")
                result[name] = next((a["local"] for i in infos for a in i.get("addr_info", [])),
                                    "")
            except (ValueError, KeyError):
                result[name] = ""
        return result

    def nodes(self) -> list[Node]:
        namespaces = self._node_namespaces()
        addresses = self._addresses(namespaces)
        order = {n.name: i for i, n in enumerate(self.config.nodes)}
        names = sorted(namespaces, key=lambda n: (order.get(n, len(order)), n))
        return [self._node(n, addresses[n]) for n in names]

    def status(self) -> list[NodeStatus]:
        namespaces = self._node_namespaces()
        addresses = self._addresses(namespaces)
        statuses = []
        for spec in self.config.nodes:
            if spec.name not in namespaces:
                statuses.append(NodeStatus(spec.name, "", "missing", {"role": spec.role}))
                continue
            address = addresses[spec.name]
            statuses.append(NodeStatus(spec.name, address, "running" if address else "degraded",
                                       {"role": spec.role, "netns": namespaces[spec.name]}))
        for extra in sorted(set(namespaces) - {n.name for n in self.config.nodes}):
            statuses.append(NodeStatus(extra, addresses[extra], "orphan",
                                       {"netns": namespaces[extra],
                                        "note": "not in the config; `lab down` removes it"}))
        return statuses

    def pod_namespaces(self) -> list[str]:
        prefix = ns_prefix(self.lab) + POD_PREFIX
        return [ns for ns in lab_namespaces(self.lab) if ns.startswith(prefix)]

    def destroy(self) -> None:
        namespaces = lab_namespaces(self.lab)
        # Processes inside (a resident plugin, an iperf3 server) would keep a namespace and its
        # veths alive after its name is gone: stop them first. They run in namespaces only this
        # lab makes, so they are this lab's.
        _stop_processes(namespaces)
        # ... and every helper this lab's plugin files ever started, in whatever namespace
        # (one started by an earlier `lab up`, or in a node namespace a failed up removed).
        _stop(holders_of(self.host_root))
        if namespaces:
            _wait_all({"host": _ip_batch([f"netns del {ns}" for ns in namespaces])},
                      "removing namespaces")
        shutil.rmtree(self.host_root, ignore_errors=True)
        with contextlib.suppress(OSError):
            HOST_ROOT.rmdir()   # only when no other lab is left

    def collect_logs(self, dest: Path) -> None:
        from lab.nodes.logs import collect_node_logs

        for node in self.nodes():
            collect_node_logs(node, dest / node.name)
        sw = node_ns(self.lab, SWITCH)
        if sw in lab_namespaces(self.lab):
            out_dir = dest / SWITCH
            out_dir.mkdir(parents=True, exist_ok=True)
            for label, cmd in (("links", "-d link show"), ("fdb", "neigh show")):
                proc = subprocess.run(["ip", "-n", sw, *cmd.split()], capture_output=True,
                                      text=True, timeout=IP_TIMEOUT, check=False)
                (out_dir / f"{label}.txt").write_text(proc.stdout + proc.stderr)


def _stop_processes(namespaces: Sequence[str]) -> None:
    if not namespaces:
        return
    procs = {ns: _ip(["netns", "pids", ns]) for ns in namespaces}
    pids = []
    for proc in procs.values():
        out, _ = proc.communicate(timeout=IP_TIMEOUT)
        pids += [int(p) for p in out.split() if p.isdigit() and int(p) != os.getpid()]
    _stop(pids)


def holders_of(root: Path) -> list[int]:
    """Processes holding a file under root open: a resident plugin helper keeps its own
    executable at an fd, wherever it lives (even in a namespace whose name is long gone)."""
    prefix = str(root).rstrip("/") + "/"
    found = []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        pid = int(fd_dir.parent.name)
        if pid == os.getpid():
            continue
        try:
            targets = [os.readlink(fd) for fd in fd_dir.iterdir()]
        except OSError:       # gone, or not ours to look at
            continue
        if any(target.startswith(prefix) for target in targets):
            found.append(pid)
    return found


def _stop(pids: Sequence[int]) -> None:
    if not pids:
        return
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie child of ours counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return False
