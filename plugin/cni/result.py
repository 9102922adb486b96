"""CNI results: one internal shape (the 1.0.0/1.1.0 one) and conversion to every version we speak.

0.3.0, 0.3.1 and 0.4.0 results are the same document with `"version": "4"|"6"` on each IP;
1.0.0 dropped that field; 1.1.0 kept the 1.0.0 types and added optional fields (interface
`mtu`, `socketPath`, `pciID`; route `mtu`, `advmss`, `priority`, `table`, `scope`), which
older versions must not see.
"""
from __future__ import annotations

import copy
import ipaddress
from typing import Any

from plugin.cni.errors import DECODE_FAILURE, CniError

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST = "1.1.0"
_INTERFACE_FIELDS_1_1 = ("mtu", "socketPath", "pciID")
_ROUTE_FIELDS_1_1 = ("mtu", "advmss", "priority", "table", "scope")

Result = dict[str, Any]


def version_key(version: str) -> tuple[int, ...]:
    """(1, 1, 0) for "1.1.0"; (-1,) for anything that is not dotted numbers."""
    try:
        return tuple(int(part) for part in version.split("."))
    except (AttributeError, ValueError):
        return (-1,)


def _bad(where: str, why: str) -> CniError:
    return CniError(DECODE_FAILURE, f"invalid result: {where}: {why}")


def normalize(raw: Any, where: str = "result") -> Result:
    """Any supported version's result -> the internal shape (validated, a deep copy)."""
    if not isinstance(raw, dict):
        raise _bad(where, "must be a JSON object")
    res: Result = {"interfaces": [], "ips": [], "routes": []}
    interfaces = raw.get("interfaces") or []
    if not isinstance(interfaces, list) or not all(
            isinstance(i, dict) and isinstance(i.get("name"), str) for i in interfaces):
        raise _bad(f"{where}.interfaces", "must be a list of objects with a name")
    res["interfaces"] = copy.deepcopy(interfaces)
    for n, ip in enumerate(raw.get("ips") or []):
        if not isinstance(ip, dict) or not isinstance(ip.get("address"), str):
            raise _bad(f"{where}.ips[{n}]", "must be an object with an address")
        try:
            ipaddress.ip_interface(ip["address"])
            if ip.get("gateway"):
                ipaddress.ip_address(ip["gateway"])
        except ValueError as e:
            raise _bad(f"{where}.ips[{n}]", str(e)) from None
        entry = {k: v for k, v in ip.items() if k != "version"}
        index = entry.get("interface")
        if index is not None and (not isinstance(index, int) or
                                  not 0 <= index < len(res["interfaces"])):
            raise _bad(f"{where}.ips[{n}].interface", f"{index!r} is not an interface index")
        res["ips"].append(entry)
    for n, route in enumerate(raw.get("routes") or []):
        if not isinstance(route, dict) or not isinstance(route.get("dst"), str):
            raise _bad(f"{where}.routes[{n}]", "must be an object with a dst")
        try:
            ipaddress.ip_network(route["dst"], strict=False)
            if route.get("gw"):
                ipaddress.ip_address(route["gw"])
        except ValueError as e:
            raise _bad(f"{where}.routes[{n}]", str(e)) from None
        res["routes"].append(dict(route))
    if isinstance(raw.get("dns"), dict) and raw["dns"]:
        res["dns"] = copy.deepcopy(raw["dns"])
    return res


def render(res: Result, version: str) -> Result:
    """The internal shape as the document `version` expects, with cniVersion first."""
    old = version_key(version) < (1, 0, 0)
    pre_1_1 = version_key(version) < (1, 1, 0)
    out: Result = {"cniVersion": version}
    interfaces = []
    for iface in res.get("interfaces", []):
        item = {k: v for k, v in iface.items() if v not in (None, "")}
        if pre_1_1:
            for key in _INTERFACE_FIELDS_1_1:
                item.pop(key, None)
        interfaces.append(item)
    if interfaces:
        out["interfaces"] = interfaces
    ips = []
    for ip in res.get("ips", []):
        item = dict(ip)
        if old:
            family = ipaddress.ip_interface(ip["address"]).version
            item = {"version": str(family), **item}
        ips.append(item)
    if ips:
        out["ips"] = ips
    routes = []
    for route in res.get("routes", []):
        item = dict(route)
        if pre_1_1:
            for key in _ROUTE_FIELDS_1_1:
                item.pop(key, None)
        routes.append(item)
    if routes:
        out["routes"] = routes
    if res.get("dns"):
        out["dns"] = res["dns"]
    return out


def convert(raw: Any, version: str) -> Result:
    return render(normalize(raw), version)


def merge(prev: Result, ours: Result) -> Result:
    """prevResult followed by what this plugin added (our IP interface indexes shifted)."""
    shift = len(prev.get("interfaces", []))
    merged: Result = copy.deepcopy(prev)
    merged.setdefault("interfaces", []).extend(copy.deepcopy(ours.get("interfaces", [])))
    ips: list[dict[str, Any]] = merged.setdefault("ips", [])
    for ip in ours.get("ips", []):
        item = dict(ip)
        if isinstance(item.get("interface"), int):
            item["interface"] += shift
        ips.append(item)
    merged.setdefault("routes", []).extend(copy.deepcopy(ours.get("routes", [])))
    if ours.get("dns"):
        merged["dns"] = copy.deepcopy(ours["dns"])
    return merged
