"""Pods as network namespaces on the lab's nodes: the netns driver of the scenario Cluster.

A pod is the namespace `cnilab-<lab>-pod-<name>` made on its node and attached to the network
under test with CNI ADD, exactly as a runtime would. What pods exist is read back from the
runtime's result caches on the nodes (no harness state file to go stale); a pod's IP is the one
its ADD result gave it.
"""
from __future__ import annotations

import contextlib
import json
import re
import secrets
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lab.api import Attachment, AttachOptions, CommandResult, LabError, NetworkSpec, Node
from lab.drivers.readings import (
    LIST_LEASES,
    ipam_dir_of,
    parse_leases,
    plugin_under_test,
    pod_subnet_of,
    pod_veths,
)
from lab.runtime.cni_runtime import CachedAttachment, CniCallError, CniRuntime

POD_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?$")


@dataclass(frozen=True)
class NamespacePod:
    name: str
    node: str
    ifname: str
    ip: str
    attachment: Attachment
    netns_name: str
    host: Node = field(repr=False, compare=False)
    ips: dict[int, str] = field(default_factory=dict)
    # what ADD returned for the pod, as the runtime cached it (what a judge compares it with)
    result: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def exec(self, argv: Sequence[str], *, timeout: float = 30) -> CommandResult:
        return self.host.run(["ip", "netns", "exec", self.netns_name, *argv], timeout=timeout)


def pod_ips(result: dict[str, Any], ifname: str) -> dict[int, str]:
    """family -> the address ADD gave the pod's interface (the sandbox one when the result
    says which), without prefix."""
    interfaces = result.get("interfaces") or []
    candidates: dict[int, list[tuple[bool, str]]] = {}
    for ip in result.get("ips") or []:
        address = str(ip.get("address", "")).split("/")[0]
        if not address:
            continue
        index = ip.get("interface")
        on_pod = (isinstance(index, int) and 0 <= index < len(interfaces)
                  and interfaces[index].get("name") == ifname)
        candidates.setdefault(6 if ":" in address else 4, []).append((not on_pod, address))
    if not candidates:
        raise LabError("the ADD result holds no address", output=str(result)[:500])
    return {version: sorted(found)[0][1] for version, found in sorted(candidates.items())}


class NamespacePodCluster:
    """api.Cluster over namespaces: pods on the lab's nodes, attached by a libcni-like runtime."""

    # pods take CNI_ARGS and capability arguments (AttachOptions): the harness is the runtime
    takes_attach_options = True

    def __init__(self, lab_name: str, nodes: list[Node], spec: NetworkSpec) -> None:
        self.name = lab_name
        self.network_name = spec.name
        self.plugin_type = spec.plugin_type
        self.mtu = spec.mtu
        self.cni_version = spec.cni_version
        self.ipam_type = spec.ipam_type
        self.families = spec.families
        self.spec = spec
        self._nodes = {node.name: node for node in nodes}
        self._runtimes = {node.name: CniRuntime(node, spec) for node in nodes}

    # -- naming ------------------------------------------------------------------------
    @property
    def pod_prefix(self) -> str:
        return f"cnilab-{self.name}-pod-"

    @property
    def stray_prefix(self) -> str:
        return f"cnilab-{self.name}-stray-"

    def nodes(self) -> list[Node]:
        return list(self._nodes.values())

    def _node(self, name: str) -> Node:
        if name not in self._nodes:
            raise LabError(f"no node named {name!r} in lab {self.name}",
                           hint=f"nodes are: {', '.join(self._nodes) or '(none)'}")
        return self._nodes[name]

    # -- pods ----------------------------------------------------------------------------
    def create_pod(self, name: str, node: str,
                   options: AttachOptions | None = None) -> NamespacePod:
        if not POD_NAME.match(name):
            raise LabError(f"invalid pod name {name!r}",
                           hint="use lowercase letters, digits and '-', at most 42 characters")
        host = self._node(node)
        options = options or AttachOptions()
        ifname = options.ifname or self.spec.ifname
        existing = [p for p in self.pods() if p.name == name]
        if existing and not options.ifname:
            raise LabError(f"pod {name} already exists", where=node,
                           hint="delete it first, pick another name, or give --ifname to "
                                "attach it once more")
        if existing:
            return self._attach_again(existing, node, ifname, options)
        netns_name = self.pod_prefix + name
        container_id = f"{self.name}-{name}-{secrets.token_hex(4)}"
        self._make_netns(host, netns_name)
        runtime = self._runtimes[node]
        try:
            result = runtime.add(container_id, netns_path(netns_name), ifname,
                                 cni_args=pod_cni_args(name, container_id, options.cni_args),
                                 capability_args=options.capability_args)
            return self._pod(node, netns_name, container_id, result, ifname)
        except BaseException:
            # A runtime tears a failed sandbox down again: DEL, then the namespace.
            with contextlib.suppress(LabError):
                runtime.delete(container_id, ifname, netns=netns_path(netns_name))
            self._remove_netns(host, netns_name)
            raise

    def _attach_again(self, existing: list[NamespacePod], node: str, ifname: str,
                      options: AttachOptions) -> NamespacePod:
        """One more attachment of the network into a pod's namespace, as Multus adds net1,
        net2: the same container ID, another CNI_IFNAME."""
        pod = existing[0]
        if pod.node != node:
            raise LabError(f"pod {pod.name} is on {pod.node}, not {node}",
                           hint=f"`lab pod add {pod.node} {pod.name} --ifname {ifname}`")
        if any(p.ifname == ifname for p in existing):
            raise LabError(f"pod {pod.name} already has {ifname}", where=node,
                           hint="give another --ifname, e.g. net2")
        container_id = pod.attachment.container_id
        runtime = self._runtimes[node]
        try:
            result = runtime.add(
                container_id, pod.attachment.netns, ifname,
                cni_args=pod_cni_args(pod.name, container_id, options.cni_args),
                capability_args=options.capability_args)
        except BaseException:
            with contextlib.suppress(LabError):    # the failed attachment only; the pod stays
                runtime.delete(container_id, ifname, netns=pod.attachment.netns)
            raise
        return self._pod(node, pod.netns_name, container_id, result, ifname)

    def delete_pod(self, pod: Any) -> None:
        """DEL, then the namespace; a second delete of the same pod is fine."""
        host = self._node(pod.node)
        netns_name = getattr(pod, "netns_name", self.pod_prefix + pod.name)
        exists = host.run(["test", "-e", netns_path(netns_name)]).ok
        runtime = self._runtimes[pod.node]
        # every attachment of the pod's container, the extra ones (--ifname) first
        ifnames = [c.ifname for c in runtime.cached_attachments()
                   if c.container_id == pod.attachment.container_id and c.ifname != pod.ifname]
        try:
            for ifname in [*ifnames, pod.ifname]:
                runtime.delete(pod.attachment.container_id, ifname,
                               netns=netns_path(netns_name) if exists else "")
        finally:
            if exists:
                self._remove_netns(host, netns_name).check(pod.node)

    def pods(self) -> list[NamespacePod]:
        found = []
        for node, runtime in self._runtimes.items():
            for entry in runtime.cached_attachments():
                netns_name = entry.netns.rsplit("/", 1)[-1]
                if netns_name.startswith(self.pod_prefix):
                    found.append(self._pod(node, netns_name, entry.container_id, entry.result,
                                           ifname=entry.ifname))
        return found

    def _pod(self, node: str, netns_name: str, container_id: str, result: dict[str, Any],
             ifname: str | None = None) -> NamespacePod:
        ifname = ifname or self.spec.ifname
        ips = pod_ips(result, ifname)
        return NamespacePod(
            name=netns_name[len(self.pod_prefix):], node=node, ifname=ifname,
            ip=next(iter(ips.values())),
            attachment=Attachment(container_id, ifname, node, netns_path(netns_name)),
            netns_name=netns_name, host=self._node(node), ips=ips, result=result)

    def add_result(self, pod: Any) -> dict[str, Any] | None:
        """The ADD result the runtime cached for the pod (None when it holds none)."""
        cached = self._runtimes[pod.node].cached(pod.attachment.container_id, pod.ifname)
        return cached.result if cached else None

    def runtime(self, node: str) -> CniRuntime:
        """The node's runtime, for scenarios that make calls a pod's life never makes."""
        return self._runtimes[node]

    def bare_namespace(self, node: str) -> str:
        """A new empty namespace on node, named like a stray (so the leak audit sees it)."""
        name = self.stray_prefix + secrets.token_hex(4)
        self._make_netns(self._node(node), name)
        return netns_path(name)

    def remove_namespace(self, node: str, path: str) -> None:
        self._remove_netns(self._node(node), path.rsplit("/", 1)[-1])

    # -- the runtime's other calls -------------------------------------------------------
    def cni_check(self, pod: Any) -> CommandResult:
        argv = ("CNI", "CHECK", pod.attachment.container_id, pod.ifname)
        try:
            self._runtimes[pod.node].check(pod.attachment.container_id, pod.ifname)
        except CniCallError as e:
            return CommandResult(argv, 1, "", e.describe())
        return CommandResult(argv, 0, "", "")

    def pod_namespaces(self, node: str) -> list[str]:
        listed = self._node(node).run(["ip", "netns", "list"]).check(node).stdout
        names = (line.split()[0] for line in listed.splitlines() if line.strip())
        return sorted(n for n in names if n.startswith((self.pod_prefix, self.stray_prefix)))

    # -- the runtime's calls by hand (`lab cni`) ------------------------------------------
    def cni_call(self, pod: Any, command: str) -> CommandResult:
        """ADD, CHECK or DEL of the pod's attachment as the runtime makes it: CHECK and DEL
        with the cached result, ADD (after a DEL) into the pod's namespace, cached again."""
        runtime = self._runtimes[pod.node]
        container_id = pod.attachment.container_id
        argv = ("CNI", command, container_id, pod.ifname)
        try:
            if command == "CHECK":
                runtime.check(container_id, pod.ifname)
            elif command == "DEL":
                runtime.delete(container_id, pod.ifname, netns=pod.attachment.netns)
            elif command == "ADD":
                result = runtime.add(container_id, pod.attachment.netns, pod.ifname,
                                     cni_args=pod_cni_args(pod.name, container_id))
                return CommandResult(argv, 0, json.dumps(result, indent=2), "")
            else:
                raise LabError(f"{command} is not a command on one attachment",
                               hint="ADD, CHECK or DEL (GC and STATUS take a node)")
        except CniCallError as e:
            return CommandResult(argv, 1, e.stdout, e.describe())
        return CommandResult(argv, 0, "", "")

    def cni_calls(self, pod: Any, command: str) -> list[tuple[list[str], str]]:
        return self._runtimes[pod.node].calls_for(command, pod.attachment.container_id,
                                                  pod.ifname)

    def cni_node_calls(self, node: str, command: str) -> list[tuple[list[str], str]]:
        self._node(node)
        return self._runtimes[node].node_calls_for(command)

    def cni_status(self, node: str) -> CommandResult:
        argv = ("CNI", "STATUS", node)
        try:
            skipped = self._runtimes[node].status()
        except CniCallError as e:
            return CommandResult(argv, 1, "", e.describe())
        return CommandResult(argv, 0, "", skipped)

    def detached_pod(self, name: str, node: str) -> NamespacePod:
        """A pod whose attachment was DELeted by hand: its namespace is still there (netns
        labs share one /run/netns, so the node must be named)."""
        netns_name = self.pod_prefix + name
        host = self._node(node)
        if not host.run(["test", "-e", netns_path(netns_name)]).ok:
            raise LabError(f"no pod {name} on {node}", hint="`lab pod ls` lists the pods")
        container_id = f"{self.name}-{name}-{secrets.token_hex(4)}"
        return NamespacePod(name=name, node=node, ifname=self.spec.ifname, ip="",
                            attachment=Attachment(container_id, self.spec.ifname, node,
                                                  netns_path(netns_name)),
                            netns_name=netns_name, host=host)

    def add_stray_attachment(self, node: str) -> Attachment:
        """ADD behind the runtime's back: a live attachment no cache (and so no GC list) knows."""
        host = self._node(node)
        suffix = secrets.token_hex(4)
        netns_name, container_id = self.stray_prefix + suffix, f"{self.name}-stray-{suffix}"
        self._make_netns(host, netns_name)
        runtime = self._runtimes[node]
        try:
            runtime.add(container_id, netns_path(netns_name),
                        cni_args=pod_cni_args("stray-" + suffix, container_id))
        except BaseException:
            self._remove_netns(host, netns_name)
            raise
        finally:
            # Forget it, as a runtime that crashed after ADD would have.
            runtime.forget(container_id)
        return Attachment(container_id, self.spec.ifname, node, netns_path(netns_name))

    def delete_stray_attachment(self, attachment: Attachment) -> None:
        """Cleans up after add_stray_attachment whether or not GC already did."""
        host = self._node(attachment.node)
        exists = bool(attachment.netns) and host.run(["test", "-e", attachment.netns]).ok
        try:
            self._runtimes[attachment.node].delete(
                attachment.container_id, attachment.ifname,
                netns=attachment.netns if exists else "")
        finally:
            if exists:
                self._remove_netns(host, attachment.netns.rsplit("/", 1)[-1])

    def cni_gc(self, node: str) -> CommandResult:
        return self._runtimes[node].gc_result()

    # -- what the plugin left on a node ---------------------------------------------------
    def host_interfaces(self, node: str) -> list[str]:
        """veth links in the node's namespace except its underlay: the pods' host ends."""
        host = self._node(node)
        links = host.run(["ip", "-o", "link", "show", "type", "veth"]).check(node).stdout
        addrs = host.run(["ip", "-o", "-4", "addr", "show"]).check(node).stdout
        return pod_veths(links, addrs, host.address)

    def ipam_leases(self, node: str) -> dict[str, str]:
        """host-local's lease files on node: IP -> container ID."""
        host = self._node(node)
        res = host.run(["sh", "-c", LIST_LEASES, "sh", self.ipam_dir(node)]).check(node)
        return parse_leases(res.stdout)

    def ipam_dir(self, node: str) -> str:
        return ipam_dir_of(self._plugin_conf(node), self.spec.name)

    def pod_subnet(self, node: str, family: int | None = None) -> str:
        family = family or self.spec.families[0]
        return pod_subnet_of(self._plugin_conf(node), node, family,
                             self.spec.pod_subnets.get(node, {}))

    def _plugin_conf(self, node: str) -> dict[str, Any]:
        return plugin_under_test(self.spec.configs.get(node, {}))

    def plugin_calls(self) -> list[str]:
        """The runtime's last plugin calls on every node, with the plugin's stderr."""
        return [call for runtime in self._runtimes.values() for call in runtime.calls]

    def cached_attachments(self, node: str) -> list[CachedAttachment]:
        return self._runtimes[node].cached_attachments()

    def close(self) -> None:
        pass

    # -- namespaces ------------------------------------------------------------------------
    @staticmethod
    def _make_netns(host: Node, netns_name: str) -> None:
        res = _netns_command(host, ["add", netns_name])
        if not res.ok and "File exists" not in res.stderr:
            res.check(host.name)
        # A runtime's sandbox has lo up (the loopback plugin's job under containerd).
        up = host.run(["ip", "netns", "exec", netns_name, "ip", "link", "set", "lo", "up"])
        if not up.ok:
            _netns_command(host, ["del", netns_name])
            raise LabError(f"pod namespace {netns_name} is not usable", where=host.name,
                           output=up.stderr)

    @staticmethod
    def _remove_netns(host: Node, netns_name: str) -> CommandResult:
        return _netns_command(host, ["del", netns_name])


def _netns_command(host: Node, args: list[str]) -> CommandResult:
    """`ip netns add|del` where the namespace's bind mount is seen by everyone on the node.

    A netns node runs commands through `ip netns exec`, in a private mount namespace whose
    mounts never reach the host: a pod namespace added there would vanish with the command.
    Those nodes share this host, so the harness makes their pod namespaces itself.
    """
    from lab.nodes.providers.netns import NetnsNode

    argv = ["ip", "netns", *args]
    if isinstance(host, NetnsNode):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        return CommandResult(tuple(argv), done.returncode, done.stdout, done.stderr)
    return host.run(argv)


def netns_path(netns_name: str) -> str:
    return f"/run/netns/{netns_name}"


def pod_cni_args(pod_name: str, container_id: str, extra: str = "") -> str:
    # What Kubernetes runtimes pass; IgnoreUnknown keeps plugins that don't know them happy.
    # The caller's own pairs (`lab pod add --cni-args`) come after, as libcni joins Args.
    own = (f"IgnoreUnknown=1;K8S_POD_NAMESPACE=cnilab;K8S_POD_NAME={pod_name};"
           f"K8S_POD_INFRA_CONTAINER_ID={container_id}")
    return f"{own};{extra}" if extra else own
