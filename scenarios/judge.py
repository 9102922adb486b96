"""An ADD result judged against the spec and against the pod: is it the shape of the config's
CNI version, and is what it claims (addresses, MACs, routes, the sandbox, interfaces up) what
the pod and the node really have? Read with one command in the pod and one on the node.

A finding is one line: the field, what it claims, what was found and where.
"""
from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any

from lab.api import Node, Pod

from .spec import self_findings, shape_findings

# Links with their addresses, then each family's routes in every table: one exec in the pod.
_READ_POD = ("ip -j addr show; echo; ip -j -4 route show table all; echo; "
             "ip -j -6 route show table all")


@dataclass
class Links:
    """name -> (mac, flags, addresses with prefix) of one namespace."""
    macs: dict[str, str] = field(default_factory=dict)
    flags: dict[str, list[str]] = field(default_factory=dict)
    addresses: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Links:
        links = cls()
        try:
            entries = json.loads(text or "[]")
        except ValueError:
            return links
        for link in entries:
            name = str(link.get("ifname", ""))
            links.macs[name] = str(link.get("address", "")).lower()
            links.flags[name] = list(link.get("flags") or [])
            links.addresses[name] = {f"{a.get('local')}/{a.get('prefixlen')}"
                                     for a in link.get("addr_info") or [] if a.get("local")}
        return links


@dataclass
class PodView:
    links: Links
    routes: dict[int, list[dict[str, Any]]]
    problem: str = ""        # why the pod could not be read, if it could not

    @classmethod
    def read(cls, pod: Pod) -> PodView:
        res = pod.exec(["sh", "-c", _READ_POD], timeout=20)
        parts = ([*res.stdout.split("\n\n"), "", "", ""])[:3] if res.ok else ["", "", ""]
        routes = {}
        for family, text in ((4, parts[1]), (6, parts[2])):
            try:
                routes[family] = list(json.loads(text.strip() or "[]"))
            except ValueError:
                routes[family] = []
        problem = "" if res.ok else (res.stderr.strip() or f"rc={res.rc}")[:200]
        return cls(Links.parse(parts[0].strip()), routes, problem)

    def has_route(self, dst: str, gw: str | None, table: int | None = None) -> bool:
        want = ipaddress.ip_network(dst, strict=False)
        for route in self.routes.get(want.version, []):
            if route.get("type") not in (None, "unicast"):
                continue
            if _route_dst(route, want.version) != want:
                continue
            if gw and route.get("gateway") != gw:
                continue
            if table is not None and str(route.get("table", "main")) not in (
                    str(table), *(("main",) if table == 254 else ())):
                continue
            return True
        return False

    def describe_routes(self, family: int) -> str:
        shown = []
        for route in self.routes.get(family, []):
            if route.get("type") not in (None, "unicast") or route.get("table") == "local":
                continue
            text = str(route.get("dst"))
            text += f" via {route['gateway']}" if route.get("gateway") else ""
            text += f" dev {route.get('dev')}" if route.get("dev") else ""
            shown.append(text)
        return "; ".join(shown) or "none"


def _route_dst(route: dict[str, Any], family: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    dst = str(route.get("dst", ""))
    if dst == "default":
        return ipaddress.ip_network("0.0.0.0/0" if family == 4 else "::/0")
    return ipaddress.ip_network(dst, strict=False)


def _claims(result: dict[str, Any], ifname: str) -> tuple[list[tuple[str, str, str]],
                                                         list[tuple[str, dict[str, Any]]]]:
    """(field, address, interface name) and (field, route) a result claims for the pod, in any
    version's shape (0.1.0/0.2.0: ip4/ip6 on CNI_IFNAME)."""
    addresses, routes = [], []
    for key in ("ip4", "ip6"):
        legacy = result.get(key)
        if isinstance(legacy, dict):
            if legacy.get("ip"):
                addresses.append((f"{key}.ip", str(legacy["ip"]), ifname))
            for n, route in enumerate(legacy.get("routes") or []):
                routes.append((f"{key}.routes[{n}]", route))
    interfaces = result.get("interfaces") or []
    for n, ip in enumerate(result.get("ips") or []):
        if not isinstance(ip, dict) or not ip.get("address"):
            continue
        index = ip.get("interface")
        name = ifname
        if isinstance(index, int) and 0 <= index < len(interfaces):
            iface = interfaces[index]
            if not iface.get("sandbox"):
                continue            # an address on a host-side interface: not the pod's
            name = str(iface.get("name", ifname))
        addresses.append((f"ips[{n}]", str(ip["address"]), name))
    routes += [(f"routes[{n}]", r) for n, r in enumerate(result.get("routes") or [])]
    return addresses, [(w, r) for w, r in routes if isinstance(r, dict) and r.get("dst")]


def claim_findings(result: dict[str, Any], view: PodView, node_links: Links, *, pod: str,
                   node: str, netns: str, ifname: str) -> list[str]:
    """What the result claims that the pod (or, for host-side interfaces, the node) lacks."""
    if view.problem:
        return [f"could not read pod {pod}: {view.problem}"]
    found = []
    interfaces = result.get("interfaces")
    if isinstance(interfaces, list) and interfaces and not any(
            isinstance(i, dict) and i.get("name") == ifname and i.get("sandbox")
            for i in interfaces):
        found.append(f"interfaces: no entry for CNI_IFNAME {ifname} with a sandbox "
                     f"(it lists {[i.get('name') for i in interfaces if isinstance(i, dict)]})")
    for n, iface in enumerate(interfaces if isinstance(interfaces, list) else []):
        if not isinstance(iface, dict):
            continue
        name, mac = str(iface.get("name", "")), str(iface.get("mac") or "").lower()
        where = f"interfaces[{n}] ({name})"
        sandbox = iface.get("sandbox")
        if sandbox:
            if netns and sandbox != netns:
                found.append(f"{where}: sandbox says {sandbox}, the pod's netns is {netns}")
            if name not in view.links.macs:
                found.append(f"{where}: pod {pod} has no such interface (it has "
                             f"{', '.join(sorted(view.links.macs))})")
                continue
            if mac and view.links.macs[name] != mac:
                found.append(f"{where}: mac says {mac}, pod {pod}'s {name} has "
                             f"{view.links.macs[name]}")
            if "UP" not in view.links.flags[name]:
                found.append(f"{where}: down in pod {pod} "
                             f"(flags {','.join(view.links.flags[name])})")
        elif name and node_links.macs:
            if name not in node_links.macs:
                found.append(f"{where}: a host-side interface {node} does not have")
            elif mac and node_links.macs[name] != mac:
                found.append(f"{where}: mac says {mac}, {node}'s {name} has "
                             f"{node_links.macs[name]}")
    addresses, routes = _claims(result, ifname)
    for where, address, name in addresses:
        has = view.links.addresses.get(name)
        if has is None:
            found.append(f"{where}: {address} on {name}, pod {pod} has no {name}")
        elif _normal(address) not in {_normal(a) for a in has}:
            found.append(f"{where}: claims {address} on {name}, pod {pod}'s {name} has "
                         f"{', '.join(sorted(has)) or 'no address'}")
    for where, route in routes:
        dst, gw = str(route["dst"]), route.get("gw")
        try:
            present = view.has_route(dst, gw, route.get("table"))
            family = ipaddress.ip_network(dst, strict=False).version
        except ValueError:
            continue            # the shape check already said what is wrong with it
        if not present:
            found.append(f"{where}: claims {dst}" + (f" via {gw}" if gw else "")
                         + f", pod {pod} has no such route (its IPv{family} routes: "
                         f"{view.describe_routes(family)})")
    return found


def _normal(address: str) -> str:
    try:
        return str(ipaddress.ip_interface(address))
    except ValueError:
        return address


def judge_add(result: dict[str, Any] | None, config_version: str, pod: Pod, node: Node,
              node_macs: dict[str, str] | None = None) -> list[str]:
    """Every finding on one ADD result: shape, self-consistency, and the pod's reality (the
    node's link MACs are read unless given)."""
    if not result:
        return [f"the runtime holds no ADD result for pod {pod.name}"]
    found = shape_findings(result, config_version)
    found += self_findings(result, config_version)
    if node_macs is None:
        links = Links.parse(node.run(["ip", "-j", "link", "show"], timeout=20).stdout)
    else:
        links = Links(macs=dict(node_macs))
    found += claim_findings(result, PodView.read(pod), links, pod=pod.name, node=node.name,
                            netns=pod.attachment.netns, ifname=pod.ifname)
    return found
