"""The network under test as each node sees it, rendered from lab.toml and the real nodes.

For our plugin ("cnilab") the lab fills in `nodes` (real names, IPs, pod subnets) and `backend`
when the config leaves them out. For any other plugin (reference ptp, bridge) the string
${NODE_POD_SUBNET} anywhere in the config becomes the node's pod subnet. netns nodes share the
host filesystem, so each one's host-local leases and plugin log go under its own state dir.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from lab.api import LabError, NetworkSpec, Node
from lab.config import LabConfig
from lab.providers import plugin_dir

POD_SUBNET_VAR = "${NODE_POD_SUBNET}"
CNILAB_TYPE = "cnilab"
DEFAULT_CNI_VERSION = "1.1.0"
DEFAULT_MTU = 1500
VXLAN_OVERHEAD = 50
REFERENCE_PLUGIN_DIR = "/usr/lib/cni"   # host-local & co. (Debian's containernetworking-plugins)


def _substitute(value: Any, subnet: str) -> Any:
    if isinstance(value, str):
        return value.replace(POD_SUBNET_VAR, subnet)
    if isinstance(value, list):
        return [_substitute(v, subnet) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, subnet) for k, v in value.items()}
    return value


def base_config(config: LabConfig) -> dict[str, Any]:
    """The config as written, with the keys every CNI network config needs filled in."""
    plugin = config.plugin
    raw = copy.deepcopy(plugin.config)
    raw.setdefault("cniVersion", DEFAULT_CNI_VERSION)
    raw.setdefault("name", config.name)
    raw.setdefault("type", plugin.plugin_type)
    if raw["type"] == CNILAB_TYPE:
        raw.setdefault("backend", plugin.backend)
        raw.setdefault("ipam", {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}]})
    return raw


def pod_mtu(raw: dict[str, Any]) -> int | None:
    """The MTU pods should get: our plugin takes the VXLAN overhead off its `mtu`."""
    mtu = raw.get("mtu")
    if raw.get("type") == CNILAB_TYPE:
        mtu = mtu if isinstance(mtu, int) else DEFAULT_MTU
        return mtu - VXLAN_OVERHEAD if raw.get("backend") == "vxlan" else mtu
    return mtu if isinstance(mtu, int) else None


def network_spec(config: LabConfig, nodes: Sequence[Node]) -> NetworkSpec:
    if not nodes:
        raise LabError("the lab has no nodes", hint="run `lab up` first")
    raw = base_config(config)
    subnets = config.pod_subnets()
    missing = [n.name for n in nodes if n.name not in subnets]
    if missing:
        raise LabError(f"nodes {', '.join(missing)} exist but are not in the config",
                       hint="`lab down` then `lab up`, or add them back to [[nodes]]")
    if raw["type"] == CNILAB_TYPE and "nodes" not in raw:
        raw["nodes"] = [{"name": n.name, "ip": n.address, "podSubnet": str(subnets[n.name])}
                        for n in nodes]

    node_local = config.lab.provider == "netns"
    configs, cni_paths = {}, {}
    for node in nodes:
        conf = _substitute(raw, str(subnets[node.name]))
        if node_local:
            ipam = conf.get("ipam")
            if isinstance(ipam, dict) and ipam.get("type") == "host-local":
                ipam.setdefault("dataDir", f"{node.state_dir}/ipam")
            if conf["type"] == CNILAB_TYPE:
                conf.setdefault("logFile", f"{node.state_dir}/cnilab.log")
        configs[node.name] = conf
        bin_dir = plugin_dir(config.lab.provider, node)
        # The plugin under test first, then Debian's host-local & co. (the lab image and
        # netns hosts have containernetworking-plugins; /opt/cni/bin may hold other IPAMs).
        cni_paths[node.name] = f"{bin_dir}:{REFERENCE_PLUGIN_DIR}"

    first = nodes[0].name
    return NetworkSpec(name=raw["name"], plugin_type=raw["type"], ifname=config.plugin.ifname,
                       cni_path=cni_paths[first], configs=configs, mtu=pod_mtu(raw),
                       cni_paths=cni_paths)
