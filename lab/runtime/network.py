"""The network under test as each node sees it, rendered from lab.toml and the real nodes.

For our plugin ("cnilab") the lab fills in `nodes` (real names, IPs, pod subnets) and `backend`
when the config leaves them out. For any plugin, ${NODE_NAME}, ${NODE_IP}, ${NODE_POD_SUBNET}
and ${POD_CIDR} anywhere in a string become the node's values, and a value that is just
"${NODES}" or "${PEERS}" becomes the list of every node / every other node. netns nodes share the
host filesystem, so each one's host-local leases and plugin log go under its own state dir.
"""
from __future__ import annotations

import copy
import ipaddress
from collections.abc import Sequence
from typing import Any

from lab.api import LabError, NetworkSpec, Node
from lab.config import LabConfig
from lab.config.chain import conflist
from lab.nodes.providers import plugin_dir
from lab.runtime.cni_runtime import version_tuple

DEFAULT_CNI_VERSION = "1.1.0"
DEFAULT_MTU = 1500
VXLAN_OVERHEAD = 50
REFERENCE_PLUGIN_DIR = "/usr/lib/cni"   # host-local & co. (Debian's containernetworking-plugins)


def _substitute(value: Any, words: dict[str, str], lists: dict[str, list[Any]]) -> Any:
    if isinstance(value, str):
        if value.startswith("${") and value[2:-1] in lists and value.endswith("}"):
            return copy.deepcopy(lists[value[2:-1]])
        for name, text in words.items():
            value = value.replace("${" + name + "}", text)
        return value
    if isinstance(value, list):
        return [_substitute(v, words, lists) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, words, lists) for k, v in value.items()}
    return value


def node_addresses(config: LabConfig, node: Node) -> dict[int, str]:
    """family -> the node's underlay address: the one it answers on, and for providers that
    choose addresses (netns, libvirt, podman) the other family's from the config."""
    found: dict[int, str] = {ipaddress.ip_address(node.address).version: node.address}
    if config.lab.provider in ("netns", "libvirt", "podman"):
        for version, addresses in config.underlay_addresses_by_family().items():
            found.setdefault(version, str(addresses.get(node.name, "")) or "")
    return {v: a for v, a in sorted(found.items()) if a}


def node_entry(config: LabConfig, node: Node) -> dict[str, Any]:
    """The node as a cluster-wide config lists it: name, ip, podSubnet, and on dual-stack
    labs every family's addresses and pod subnets too (ips, podSubnets)."""
    subnets = config.pod_subnets_by_family()
    addresses = node_addresses(config, node)
    pods = [str(subnets[v][node.name]) for v in subnets]
    entry: dict[str, Any] = {"name": node.name, "ip": node.address, "podSubnet": pods[0]}
    if len(addresses) > 1 or len(pods) > 1:
        entry["ips"] = list(addresses.values())
        entry["podSubnets"] = pods
    return entry


def node_variables(config: LabConfig, nodes: Sequence[Node],
                   node: Node) -> tuple[dict[str, str], dict[str, list[Any]]]:
    """The values of the placeholders (lab.config.plugin_config: checked there when the
    config is read) for one node (also the node setup hook's
    environment). ${NODE_POD_SUBNET}, ${NODE_IP} and ${POD_CIDR} are the primary family's
    (v4 when the lab has it); the 4 and 6 forms name one family."""
    subnets = config.pod_subnets_by_family()
    addresses = node_addresses(config, node)
    primary = next(iter(subnets))
    words = {"NODE_NAME": node.name, "NODE_IP": node.address,
             "NODE_POD_SUBNET": str(subnets[primary][node.name]),
             "POD_CIDR": str(config.network.pod_nets[primary])}
    for version in (4, 6):
        words[f"NODE_IP{version}"] = addresses.get(version, "")
        words[f"NODE_POD_SUBNET{version}"] = str(subnets[version][node.name]) \
            if version in subnets else ""
        words[f"POD_CIDR{version}"] = str(config.network.pod_nets.get(version) or "")
    listing = [node_entry(config, n) for n in nodes]
    return words, {"NODES": listing, "PEERS": [e for e in listing if e["name"] != node.name]}


def runtime_cni_limit(config: LabConfig) -> tuple[str, str] | None:
    """(the newest cniVersion the runtime that calls the plugin accepts, who that is), or None
    when the harness calls the plugin itself (netns and VM labs: every version)."""
    from lab.config.k3s import runtime_max_cni_version

    if config.k3s is None:
        return None
    if config.k3s.primary:
        return (runtime_max_cni_version(config.k3s.minor),
                f"the containerd of K3s {config.k3s.version}")
    if config.multus is not None:
        return config.multus.max_cni_version, f"Multus {config.multus.version}"
    return None


def is_secondary(config: LabConfig) -> bool:
    """A Multus network beside the cluster network: eth0 has the pod's default route."""
    return config.k3s is not None and not config.k3s.primary


def base_config(config: LabConfig) -> dict[str, Any]:
    """The config as written, with the keys every CNI network config needs filled in: the
    newest cniVersion the runtime accepts, and (ours) routes that suit where the network sits:
    the default route as the pod's only network, the pod CIDR beside eth0 as a secondary one."""
    plugin = config.plugin
    raw = copy.deepcopy(plugin.config)
    limit = runtime_cni_limit(config)
    raw.setdefault("cniVersion", limit[0] if limit else DEFAULT_CNI_VERSION)
    if limit and version_tuple(str(raw["cniVersion"])) > version_tuple(limit[0]):
        raise LabError(f"plugin.config.cniVersion {raw['cniVersion']} is newer than "
                       f"{limit[1]} accepts ({limit[0]})",
                       hint=f"set cniVersion = \"{limit[0]}\" or leave it out (the harness "
                            "picks the newest the runtime accepts)")
    raw.setdefault("name", config.name)
    raw.setdefault("type", plugin.plugin_type)
    secondary = is_secondary(config)
    if config.plugin_is_cnilab:
        raw.setdefault("backend", plugin.backend or "host-gw")
        default = {4: "0.0.0.0/0", 6: "::/0"}
        routes = [{"dst": str(net) if secondary else default[v]}
                  for v, net in config.network.pod_nets.items()]
        raw.setdefault("ipam", {"type": "host-local", "routes": routes})
    if secondary:
        _refuse_default_route(raw)
    return raw


def _refuse_default_route(raw: dict[str, Any]) -> None:
    ipam = raw.get("ipam") if isinstance(raw.get("ipam"), dict) else {}
    for route in (ipam or {}).get("routes") or []:
        if isinstance(route, dict) and route.get("dst") in ("0.0.0.0/0", "::/0"):
            raise LabError(
                f"plugin.config.ipam.routes: {route['dst']} on a secondary network collides "
                "with the default route the cluster network gives eth0 (ADD fails with "
                "'File exists')",
                hint="route only the pod CIDR over this interface (leave ipam out and the "
                     "harness does), or set k3s.primary = true to make it the cluster network")


def pod_mtu(raw: dict[str, Any], ours: bool, v6_underlay_only: bool = False) -> int | None:
    """The MTU pods should get: our plugin takes the VXLAN overhead off its `mtu` (50 bytes
    over a v4 underlay, 70 over a v6 one: the outer IPv6 header is 20 bytes longer)."""
    mtu = raw.get("mtu")
    if ours:
        mtu = mtu if isinstance(mtu, int) else DEFAULT_MTU
        overhead = VXLAN_OVERHEAD + (20 if v6_underlay_only else 0)
        return mtu - overhead if raw.get("backend") == "vxlan" else mtu
    return mtu if isinstance(mtu, int) else None


def node_cni_path(config: LabConfig, node: Node) -> str:
    """CNI_PATH on a node: the plugin under test (and shipped chained plugins) first, then
    Debian's host-local & co. (the lab image and netns hosts have containernetworking-plugins;
    /opt/cni/bin may hold other IPAMs)."""
    return f"{plugin_dir(config.lab.provider, node)}:{REFERENCE_PLUGIN_DIR}"


def network_spec(config: LabConfig, nodes: Sequence[Node]) -> NetworkSpec:
    if not nodes:
        raise LabError("the lab has no nodes", hint="run `lab up` first")
    raw = base_config(config)
    subnets = config.pod_subnets()
    missing = [n.name for n in nodes if n.name not in subnets]
    if missing:
        raise LabError(f"nodes {', '.join(missing)} exist but are not in the config",
                       hint="`lab down` then `lab up`, or add them back to [[nodes]]")
    ours = config.plugin_is_cnilab
    if ours and "nodes" not in raw:
        raw["nodes"] = [node_entry(config, n) for n in nodes]

    node_local = config.lab.provider == "netns"
    configs, cni_paths = {}, {}
    for node in nodes:
        variables = node_variables(config, nodes, node)
        conf = _substitute(raw, *variables)
        if node_local:
            ipam = conf.get("ipam")
            if isinstance(ipam, dict) and ipam.get("type") == "host-local":
                ipam.setdefault("dataDir", f"{node.state_dir}/ipam")
            if ours:
                conf.setdefault("logFile", f"{node.state_dir}/cnilab.log")
        chained = [_substitute(entry.plugin_conf(), *variables)
                   for entry in config.plugin.chain]
        configs[node.name] = conflist(conf, chained)
        cni_paths[node.name] = node_cni_path(config, node)

    first = nodes[0].name
    return NetworkSpec(name=raw["name"], plugin_type=raw["type"], ifname=config.plugin.ifname,
                       cni_path=cni_paths[first], configs=configs,
                       mtu=pod_mtu(raw, ours, 4 not in config.network.underlay_nets),
                       cni_paths=cni_paths,
                       pod_subnets={n.name: {v: str(by[n.name]) for v, by in
                                             config.pod_subnets_by_family().items()}
                                    for n in nodes},
                       families=config.network.families)
