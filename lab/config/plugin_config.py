"""[plugin.config] and [plugin] ifname checked when the config is read, not at the first ADD:
placeholders (known, and of a family the lab has), the MTU's type, the network name and the
interface name as CNI takes them (libcni's ValidateNetworkName / ValidateInterfaceName).

The placeholders are defined here, at the bottom: lab.runtime.network fills them in per node.
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from typing import Any

# Each is replaced per node. The string ones anywhere in a string; ${NODES} and ${PEERS} as a
# whole value become a list of {"name", "ip", "podSubnet"} for every node / every other node.
STRING_VARS = ("NODE_NAME", "NODE_IP", "NODE_POD_SUBNET", "POD_CIDR", "NODE_IP4", "NODE_IP6",
               "NODE_POD_SUBNET4", "NODE_POD_SUBNET6", "POD_CIDR4", "POD_CIDR6")
LIST_VARS = ("NODES", "PEERS")
PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
NETWORK_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]*")   # libcni's ValidateNetworkName
MAX_IFNAME_BYTES = 15                                       # IFNAMSIZ - 1


def _strings(value: Any, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, f"{where}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{where}.{key}")


def placeholder_problem(config: dict[str, Any], underlay_families: tuple[int, ...],
                        pod_families: tuple[int, ...], provider: str) -> str:
    """Why a placeholder in the plugin config cannot be filled in ("" when all can)."""
    known = (*STRING_VARS, *LIST_VARS)
    for where, text in _strings(config, "plugin.config"):
        for name in PLACEHOLDER.findall(text):
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                guess = f"did you mean ${{{close[0]}}}? " if close else ""
                return (f"{where}: unknown placeholder ${{{name}}}; {guess}known: "
                        + ", ".join(f"${{{k}}}" for k in known))
            family = int(name[-1]) if name[-1] in "46" else None
            if family is None:
                continue
            # node addresses of providers that do not choose them come from the machines
            families = underlay_families if name.startswith("NODE_IP") else pod_families
            if name.startswith("NODE_IP") and provider not in ("netns", "libvirt"):
                continue
            if family not in families:
                what = "network.underlay" if name.startswith("NODE_IP") else "network.pod_cidr"
                return (f"{where}: ${{{name}}} is an IPv{family} value but {what} has no "
                        f"IPv{family} network; add one there or use ${{{name[:-1]}}}")
    return ""


def _plugins(config: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The plugin configs in a network config or a conflist, with where each is."""
    listed = config.get("plugins")
    if isinstance(listed, list):
        return [(f"plugin.config.plugins[{i}]", p) for i, p in enumerate(listed)
                if isinstance(p, dict)]
    return [("plugin.config", config)]


def value_problem(config: dict[str, Any]) -> str:
    """A network name or MTU that no runtime or plugin takes ("" when none)."""
    name = config.get("name")
    if name is not None and (not isinstance(name, str) or not NETWORK_NAME.fullmatch(name)):
        return (f"plugin.config.name: {name!r} is not a CNI network name: letters, digits, "
                "'_', '.' and '-', starting with a letter or digit (no spaces)")
    for where, plugin in _plugins(config):
        mtu = plugin.get("mtu")
        if mtu is not None and (not isinstance(mtu, int) or isinstance(mtu, bool)):
            hint = f"mtu = {mtu}" if isinstance(mtu, str) and mtu.isdigit() else "mtu = 1500"
            return f"{where}.mtu: must be an integer, got {mtu!r}; write {hint} (no quotes)"
    return ""


_IFNAME = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]*")


def ifname_problem(name: str) -> str:
    """Why `name` cannot be a pod interface name ("" when it can)."""
    if not name:
        return "is empty"
    if len(name.encode()) > MAX_IFNAME_BYTES:
        return f"is longer than {MAX_IFNAME_BYTES} bytes (the kernel's limit)"
    if name in (".", "..") or any(c in name for c in "/:") or any(c.isspace() for c in name):
        return "cannot be . or .., nor hold '/', ':' or whitespace"
    # The kernel takes more, but the name reaches ip command lines and the runtime's shell
    # reproducers: letters, digits, '_', '.', '-', and no leading '-' (it would be an option).
    if not _IFNAME.fullmatch(name):
        return "may hold only letters, digits, '_', '.' and '-', and not start with '-'"
    return ""
