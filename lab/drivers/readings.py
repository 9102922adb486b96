"""What a network config, host-local's files and `ip` output say, read without a lab (pure):
the plugin under test in a conflist, its IPAM data dir, a node's pod subnet per family, the
leases, the pods' host-side veths."""
from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Mapping
from typing import Any

from lab.api import LabError

DEFAULT_IPAM_DIR = "/var/lib/cni/networks"
# sh listing host-local's files in "$1": one `name<TAB>first 300 bytes` line each
LIST_LEASES = ('cd "$1" 2>/dev/null || exit 0; for f in *; do [ -f "$f" ] && '
               'printf "%s\\t%s\\n" "$f" "$(head -c 300 "$f" | tr "\\r\\n" "  ")"; done; true')


def plugin_under_test(config: Mapping[str, Any]) -> dict[str, Any]:
    """The plugin's own config: the first of a conflist's plugins, or the config itself."""
    if "plugins" in config:
        return dict(config["plugins"][0]) if config["plugins"] else {}
    return dict(config)


def ipam_dir_of(conf: Mapping[str, Any], network: str) -> str:
    ipam = conf.get("ipam") or {}
    data_dir = str(ipam.get("dataDir") or DEFAULT_IPAM_DIR)
    return f"{data_dir.rstrip('/')}/{network}"


def parse_leases(listing: str) -> dict[str, str]:
    """LIST_LEASES's output -> IP -> container ID (lock and last_reserved_ip.N skipped)."""
    leases = {}
    for line in listing.splitlines():
        name, _, content = line.partition("\t")
        try:
            ipaddress.ip_address(name)
        except ValueError:
            continue
        leases[name] = content.split()[0] if content.split() else ""
    return leases


def pod_subnet_of(conf: Mapping[str, Any], node: str, family: int,
                  lab_split: Mapping[int, str]) -> str:
    """The CIDR pods on node get addresses from in family: cnilab's nodes[], the IPAM ranges,
    a plugin's own top-level keys, else the lab's own split of pod_cidr (lab_split)."""
    candidates: list[str] = []
    for item in conf.get("nodes") or []:
        if isinstance(item, dict) and item.get("name") == node:
            candidates += [str(s) for s in item.get("podSubnets") or []]
            candidates += [str(item["podSubnet"])] if item.get("podSubnet") else []
    ipam = conf.get("ipam") or {}
    for range_set in ipam.get("ranges") or []:
        candidates += [str(rng["subnet"]) for rng in range_set if rng.get("subnet")]
    candidates += [str(ipam["subnet"])] if ipam.get("subnet") else []
    candidates += [str(conf[key]) for key in ("podSubnet", "subnet")   # plugins' own keys
                   if isinstance(conf.get(key), str)]
    candidates += list(lab_split.values())
    for candidate in candidates:
        with contextlib.suppress(ValueError):
            if ipaddress.ip_network(candidate, strict=False).version == family:
                return candidate
    raise LabError(f"cannot tell the IPv{family} pod subnet of {node} from the network "
                   "config", hint="give the node a podSubnet or ipam.ranges")


def pod_veths(links: str, addrs: str, node_address: str) -> list[str]:
    """`ip -o link show type veth` names, less the one holding node_address (per `ip -o -4
    addr show`): a netns node's underlay is a veth too."""
    underlay = {parts[1] for parts in (line.split() for line in addrs.splitlines())
                if len(parts) > 3 and parts[3].split("/")[0] == node_address}
    names = (parts[1].strip().split("@", 1)[0] for parts in
             (line.split(":", 2) for line in links.splitlines()) if len(parts) == 3)
    return sorted(name for name in names if name not in underlay)
