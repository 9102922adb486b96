"""PodmanProvider: nodes as privileged containers, joined by a bridge in the lab's switch
namespace (lab.nodes.providers.podman.cmdlines names every resource).

State lives in podman (container labels) and the kernel (the switch namespace): provision,
nodes, status and destroy read them, nothing else. Everything runs through the harness's own
podman storage (`[podman] storage_dir`).
"""
from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lab.api import LabError, Node, NodeStatus
from lab.config import LabConfig
from lab.config.podman import PodmanSettings
from lab.nodes.providers.podman import cmdlines
from lab.nodes.providers.podman.cmdlines import (
    LABEL_NODE,
    LABEL_ROLE,
    NODE_STATE_DIR,
    Storage,
)
from lab.nodes.providers.podman.node import ContainerNode

NETNS_DIR = Path("/run/netns")
PODMAN_TIMEOUT = 120.0
IP_TIMEOUT = 30.0


def podman(argv: Sequence[str], *, what: str, timeout: float = PODMAN_TIMEOUT,
           check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              check=False)
    except FileNotFoundError:
        raise LabError("the podman provider needs podman", hint="apt-get install podman") \
            from None
    except subprocess.TimeoutExpired:
        raise LabError(f"{what}: podman did not answer within {timeout:.0f}s",
                       output=" ".join(argv)) from None
    if check and done.returncode != 0:
        raise LabError(f"{what} failed (rc={done.returncode})", output=done.stderr or done.stdout,
                       hint="`lab down` removes a partial lab; then `lab up` again")
    return done


def ip_batch(commands: Sequence[str], *, netns: str | None = None, pid: int | None = None,
             what: str, force: bool = False) -> str:
    """One `ip -batch` in a named netns (the switch) or a container's (by pid)."""
    prefix = (["nsenter", f"--net=/proc/{pid}/ns/net", "--"] if pid is not None else [])
    argv = [*prefix, "ip", *(["-n", netns] if netns else []), *(["-force"] if force else []),
            "-batch", "-"]
    done = subprocess.run(argv, input="".join(c + "\n" for c in commands), capture_output=True,
                          text=True, timeout=IP_TIMEOUT, check=False)
    if done.returncode != 0 and not force:
        raise LabError(f"{what} failed", output=done.stderr or done.stdout,
                       hint="`lab down` removes a partial lab; then `lab up` again")
    return done.stdout


MAX_LIMIT = 1048576     # what podman would ask by default


def hard_limit(which: int) -> int:
    """The hard limit this process runs under (what root may still grant), at most MAX_LIMIT."""
    hard = resource.getrlimit(which)[1]
    return MAX_LIMIT if hard == resource.RLIM_INFINITY else min(hard, MAX_LIMIT)


class PodmanProvider:
    name = "podman"

    def __init__(self, config: LabConfig) -> None:
        self.config = config
        self.lab = config.name
        self.settings = config.podman or PodmanSettings()
        self.storage = Storage(self.settings.storage_dir, self.settings.runtime,
                               self.settings.cgroup_manager)

    # -- what podman says -----------------------------------------------------------------------
    def containers(self) -> dict[str, dict[str, Any]]:
        """node name -> `podman inspect` of its container, for every container of this lab."""
        if not (self.settings.storage_dir / "storage").is_dir():
            return {}   # nothing was ever made: no need to ask (or create) the storage
        listed = podman(cmdlines.list_argv(self.storage, self.lab), what="listing containers")
        names = [c["Names"][0] for c in json.loads(listed.stdout or "[]")]
        if not names:
            return {}
        inspected = podman(cmdlines.inspect_argv(self.storage, names), what="inspecting nodes",
                           check=False)
        found = {}
        for info in json.loads(inspected.stdout or "[]"):
            labels = info.get("Config", {}).get("Labels") or {}
            if labels.get(cmdlines.LABEL_LAB) == self.lab and labels.get(LABEL_NODE):
                found[labels[LABEL_NODE]] = info
        return found

    @staticmethod
    def _pid(info: dict[str, Any]) -> int:
        state = info.get("State", {})
        return int(state.get("Pid") or 0) if state.get("Running") else 0

    def _node(self, name: str, pid: int) -> ContainerNode:
        return ContainerNode(name=name, address=self._address(name), state_dir=NODE_STATE_DIR,
                             container=cmdlines.container_name(self.lab, name), pid=pid)

    def _address(self, name: str) -> str:
        return str(self.config.underlay_addresses().get(name, ""))

    # -- Provider -----------------------------------------------------------------------------
    def provision(self) -> list[Node]:
        if os.geteuid() != 0:
            raise LabError("the podman provider needs root (privileged containers, veths)",
                           hint="run `sudo lab up`")
        from lab.nodes.providers.podman.image import ensure_node_image

        image = ensure_node_image(self.storage, self.settings.image)
        found = self.containers()
        wanted = {spec.name: spec.role for spec in self.config.nodes}
        stopped = [n for n, info in found.items() if n in wanted and not self._pid(info)]
        if stopped:   # a container that exited has no eth0 any more: make it afresh
            podman(cmdlines.remove_argv(self.storage, [cmdlines.container_name(self.lab, n)
                                                       for n in stopped]),
                   what="removing stopped nodes")
        modules = Path("/lib/modules").is_dir()
        fresh = [n for n in wanted if n not in found or n in stopped]
        source = str(self.config.source or "")
        for name in fresh:
            spec = cmdlines.NodeRun(self.lab, name, wanted[name], image, source,
                                    self.settings.nofile or hard_limit(resource.RLIMIT_NOFILE),
                                    self.settings.nproc,
                                    modules, not self.settings.containerd_on_disk)
            podman(cmdlines.run_argv(self.storage, spec), what=f"starting node {name}",
                   timeout=self.settings.start_timeout)
        pids = {n: self._pid(info) for n, info in self.containers().items() if n in wanted}
        missing = [n for n in wanted if not pids.get(n)]
        if missing:
            raise LabError(f"node containers not running: {', '.join(missing)}",
                           hint="`lab logs` has podman's view; `lab down` then `lab up`")
        self._wire(pids, set(fresh))
        return [self._node(n, pids[n]) for n in wanted]

    def _wire(self, pids: dict[str, int], fresh: set[str]) -> None:
        sw = cmdlines.switch_ns(self.lab)
        if not (NETNS_DIR / sw).exists():
            subprocess.run(["ip", "netns", "add", sw], check=True, capture_output=True,
                           timeout=IP_TIMEOUT)
        listed = subprocess.run(["ip", "-n", sw, "-j", "link", "show"], capture_output=True,
                                text=True, timeout=IP_TIMEOUT, check=False)
        existing = {link["ifname"] for link in json.loads(listed.stdout or "[]")}
        nets = self.config.network.underlay_nets
        gateways = {v: f"{cmdlines.gateway(net)}/{net.prefixlen}" for v, net in nets.items()}
        ports = {}
        for name, pid in pids.items():
            has_eth0 = subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", "--", "ip",
                                       "link", "show", cmdlines.NODE_IF], capture_output=True,
                                      timeout=IP_TIMEOUT, check=False).returncode == 0
            ports[cmdlines.switch_port(name)] = None if has_eth0 and name not in fresh else pid
        if self.config.k3s is not None:
            self._host_port(existing)
            ports[cmdlines.HOST_PORT] = None
        stale = cmdlines.stale_ports(ports, existing)
        if stale:   # "Cannot find device" only means the kernel was first
            ip_batch(stale, netns=sw, what="removing stale switch ports", force=True)
        ip_batch(cmdlines.switch_batch(ports, existing, gateways), netns=sw,
                 what="wiring the lab switch")
        by_family = self.config.underlay_addresses_by_family()
        via = {v: str(cmdlines.gateway(net)) for v, net in nets.items()}
        for name, pid in pids.items():
            addresses = {v: f"{by_family[v][name]}/{net.prefixlen}" for v, net in nets.items()}
            ip_batch(cmdlines.node_batch(addresses, via), pid=pid,
                     what=f"configuring node {name}")
            # a node routes for its pods, like any CNI node
            subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", "--", "sysctl", "-qw",
                            "net.ipv4.ip_forward=1"], capture_output=True, timeout=IP_TIMEOUT,
                           check=True)

    def _host_port(self, switch_links: set[str]) -> None:
        """K3s labs: the harness's port on the switch, so it reaches the K3s API."""
        link = cmdlines.host_link(self.lab)
        exists = (Path("/sys/class/net") / link).exists()
        if exists and cmdlines.HOST_PORT not in switch_links:   # half made: start over
            subprocess.run(["ip", "link", "del", link], capture_output=True, timeout=IP_TIMEOUT,
                           check=False)
            exists = False
        nets = self.config.network.underlay_nets
        ip_batch(cmdlines.host_link_batch(self.lab, exists, {
            v: f"{cmdlines.host_address(net)}/{net.prefixlen}" for v, net in nets.items()}),
            what="the harness's port on the lab switch")

    def nodes(self) -> list[Node]:
        found = self.containers()
        order = {n.name: i for i, n in enumerate(self.config.nodes)}
        names = sorted((n for n, info in found.items() if self._pid(info)),
                       key=lambda n: (order.get(n, len(order)), n))
        return [self._node(n, self._pid(found[n])) for n in names]

    def status(self) -> list[NodeStatus]:
        found = self.containers()
        statuses = []
        for spec in self.config.nodes:
            info = found.get(spec.name)
            if info is None:
                statuses.append(NodeStatus(spec.name, "", "missing", {"role": spec.role}))
                continue
            running = bool(self._pid(info))
            statuses.append(NodeStatus(spec.name, self._address(spec.name),
                                       "running" if running else "stopped",
                                       {"role": spec.role, "container": info.get("Name", ""),
                                        "pid": self._pid(info)}))
        for extra in sorted(set(found) - {n.name for n in self.config.nodes}):
            labels = found[extra].get("Config", {}).get("Labels") or {}
            statuses.append(NodeStatus(extra, "", "orphan",
                                       {"role": labels.get(LABEL_ROLE, ""),
                                        "note": "not in the config; `lab down` removes it"}))
        return statuses

    def destroy(self) -> None:
        """Containers (their processes, K3s and pods with them), volumes, the switch with
        its veths (a node's eth0 goes with its namespace). Only this lab's, found by label
        and name."""
        names = [cmdlines.container_name(self.lab, n) for n in self.containers()]
        if names:
            podman(cmdlines.remove_argv(self.storage, names), what="removing nodes")
        volumes = self._volumes()
        if volumes:
            podman(cmdlines.volume_rm_argv(self.storage, volumes), what="removing volumes")
        sw = cmdlines.switch_ns(self.lab)
        link = cmdlines.host_link(self.lab)
        if (Path("/sys/class/net") / link).exists():
            subprocess.run(["ip", "link", "del", link], capture_output=True, timeout=IP_TIMEOUT,
                           check=False)
        if (NETNS_DIR / sw).exists():
            subprocess.run(["ip", "netns", "del", sw], capture_output=True, timeout=IP_TIMEOUT,
                           check=False)

    def _volumes(self) -> list[str]:
        if not (self.settings.storage_dir / "storage").is_dir():
            return []
        listed = podman(cmdlines.volumes_argv(self.storage, self.lab), what="listing volumes",
                        check=False)
        return [v for v in listed.stdout.split() if v.startswith(f"cnilab-{self.lab}-")]

    def remains(self) -> list[str]:
        """What of this lab is still on the host (what destroy removes): containers, volumes,
        its switch namespace and host link. Empty after `lab down`."""
        left = [f"container {n}" for n in self.containers()]
        left += [f"volume {v}" for v in self._volumes()]
        if (NETNS_DIR / cmdlines.switch_ns(self.lab)).exists():
            left.append(f"netns {cmdlines.switch_ns(self.lab)}")
        if (Path("/sys/class/net") / cmdlines.host_link(self.lab)).exists():
            left.append(f"host link {cmdlines.host_link(self.lab)}")
        return left

    def collect_logs(self, dest: Path) -> None:
        from lab.nodes.logs import collect_node_logs

        for node in self.nodes():
            collect_node_logs(node, dest / node.name)
        found = self.containers()
        if found:
            (dest / "podman").mkdir(parents=True, exist_ok=True)
            (dest / "podman" / "inspect.json").write_text(json.dumps(found, indent=2))
        sw = cmdlines.switch_ns(self.lab)
        if (NETNS_DIR / sw).exists():
            out_dir = dest / cmdlines.SWITCH
            out_dir.mkdir(parents=True, exist_ok=True)
            for label, cmd in (("links", "-d link show"), ("fdb", "neigh show"),
                               ("addr", "addr show")):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc = subprocess.run(["ip", "-n", sw, *cmd.split()], capture_output=True,
                                          text=True, timeout=IP_TIMEOUT, check=False)
                    (out_dir / f"{label}.txt").write_text(proc.stdout + proc.stderr)
