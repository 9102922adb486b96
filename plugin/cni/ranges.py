"""host-local's ranges and routes, read before IPAM runs: which address families a network
gives its pods, and the mixed-family nonsense refused with a clear config error (7) rather
than a half-made attachment or host-local's own wording (100) after it has been started.

    "ipam": {"type": "host-local",
             "ranges": [[{"subnet": "10.244.1.0/24"}], [{"subnet": "fd00:244:0:1::/64"}]],
             "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]}

Each range set holds one family (host-local gives one address per set); a range's gateway,
rangeStart and rangeEnd are of its subnet's family and inside it; no two ranges share an
address; a route is of a family the ranges give (its gateway too), else the pod would have
no gateway of that family. Other IPAM plugins' configs are theirs to judge.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any, Optional, Union

from plugin.cni.errors import INVALID_CONFIG, CniError

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
FAMILY_NAMES = {4: "IPv4", 6: "IPv6"}


def _invalid(where: str, why: str, details: str = "") -> CniError:
    return CniError(INVALID_CONFIG, f"invalid network config: {where}: {why}", details)


def _address(where: str, value: Any) -> IPAddress:
    if not isinstance(value, str):
        raise _invalid(where, f"must be an IP address string, got {value!r}")
    try:
        return ipaddress.ip_address(value)
    except ValueError as e:
        raise _invalid(where, str(e)) from None


def _network(where: str, value: Any) -> IPNetwork:
    if not isinstance(value, str):
        raise _invalid(where, f"must be a CIDR string, got {value!r}")
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError as e:
        raise _invalid(where, str(e)) from None


def _span(where: str, item: Mapping[str, Any], subnet: IPNetwork) -> tuple[int, int]:
    """The addresses host-local hands out from one range: [rangeStart, rangeEnd] as
    integers, the gateway checked on the way (its family, inside the subnet)."""
    family = FAMILY_NAMES[subnet.version]
    bounds: dict[str, IPAddress] = {}
    for key in ("gateway", "rangeStart", "rangeEnd"):
        if item.get(key) in (None, ""):
            continue
        value = _address(f"{where}.{key}", item[key])
        if value.version != subnet.version:
            raise _invalid(f"{where}.{key}", f"{value} is {FAMILY_NAMES[value.version]} but "
                                             f"the range's subnet {subnet} is {family}",
                           "each range's gateway, rangeStart and rangeEnd are of its "
                           "subnet's family; an IPv6 range goes in a range set of its own")
        if value not in subnet:
            raise _invalid(f"{where}.{key}", f"{value} is not in the range's subnet {subnet}")
        bounds[key] = value
    first = int(subnet.network_address) + 1
    last = int(subnet.broadcast_address) - (1 if subnet.version == 4 else 0)
    start = int(bounds["rangeStart"]) if "rangeStart" in bounds else first
    end = int(bounds["rangeEnd"]) if "rangeEnd" in bounds else last
    if start > end:
        raise _invalid(where, f"rangeStart {bounds.get('rangeStart')} is after rangeEnd "
                              f"{bounds.get('rangeEnd')}")
    return start, end


def _ranges(ipam: Mapping[str, Any]) -> list[tuple[str, IPNetwork, tuple[int, int]]]:
    """(where, subnet, span) of every range, each range set of one family."""
    found = []
    sets = ipam["ranges"]
    if not isinstance(sets, list) or not sets:
        raise _invalid("ipam.ranges", 'must be a list of range sets, e.g. '
                                      '[[{"subnet": "10.244.1.0/24"}]]')
    for i, range_set in enumerate(sets):
        if not isinstance(range_set, list) or not range_set:
            raise _invalid(f"ipam.ranges[{i}]", 'must be a non-empty list of ranges '
                                                '({"subnet": ...})')
        families: dict[int, str] = {}
        for j, item in enumerate(range_set):
            where = f"ipam.ranges[{i}][{j}]"
            if not isinstance(item, dict) or "subnet" not in item:
                raise _invalid(where, 'must be an object with a "subnet"')
            subnet = _network(f"{where}.subnet", item["subnet"])
            families.setdefault(subnet.version, str(subnet))
            if len(families) > 1:
                raise _invalid(f"ipam.ranges[{i}]", f"mixes IPv4 ({families[4]}) and IPv6 "
                                                    f"({families[6]}) in one range set",
                               "host-local gives one address per range set: put each "
                               "family's ranges in a set of their own")
            found.append((where, subnet, _span(where, item, subnet)))
    return found


def families(ipam: Mapping[str, Any], pod_families: tuple[int, ...] = ()) -> tuple[int, ...]:
    """The families host-local will give a pod (ranges, the older `subnet`, else those of
    this node's pod subnets that ADD fills in); () when that cannot be known."""
    if ipam.get("type") != "host-local":
        return ()
    if "ranges" in ipam:
        return tuple(sorted({subnet.version for _, subnet, _ in _ranges(ipam)}))
    if "subnet" in ipam:
        return (_network("ipam.subnet", ipam["subnet"]).version,)
    return pod_families


def validate(ipam: Mapping[str, Any], pod_families: tuple[int, ...] = ()) -> None:
    """Refuses (code 7, naming the field) what host-local ranges and routes cannot mean.
    `pod_families`: the pod subnets' families when ADD fills in the ranges from the node
    list (backend host-gw / vxlan)."""
    if ipam.get("type") != "host-local":
        return
    given: tuple[int, ...] = pod_families
    if "ranges" in ipam:
        ranges = _ranges(ipam)
        _refuse_overlaps(ranges)
        given = tuple(sorted({subnet.version for _, subnet, _ in ranges}))
    elif "subnet" in ipam:
        subnet = _network("ipam.subnet", ipam["subnet"])
        _span("ipam", ipam, subnet)
        given = (subnet.version,)
    _check_routes(ipam.get("routes"), given)


def _refuse_overlaps(ranges: list[tuple[str, IPNetwork, tuple[int, int]]]) -> None:
    for n, (where, subnet, (start, end)) in enumerate(ranges):
        for other, other_subnet, (other_start, other_end) in ranges[:n]:
            if subnet.version == other_subnet.version and start <= other_end and \
                    other_start <= end:
                raise _invalid(where, f"{subnet} overlaps {other} ({other_subnet})",
                               "host-local would hand out the same addresses from both: "
                               "give each range its own subnet (or disjoint rangeStart/"
                               "rangeEnd)")


def _check_routes(routes: Any, given: tuple[int, ...]) -> None:
    if routes is None:
        return
    if not isinstance(routes, list):
        raise _invalid("ipam.routes", 'must be a list of {"dst": ...}')
    for n, route in enumerate(routes):
        where = f"ipam.routes[{n}]"
        if not isinstance(route, dict) or "dst" not in route:
            raise _invalid(where, 'must be an object with a "dst"')
        dst = _network(f"{where}.dst", route["dst"])
        family = FAMILY_NAMES[dst.version]
        gw: Optional[IPAddress] = None
        if route.get("gw") not in (None, ""):
            gw = _address(f"{where}.gw", route["gw"])
            if gw.version != dst.version:
                raise _invalid(f"{where}.gw", f"{gw} is {FAMILY_NAMES[gw.version]} but dst "
                                              f"{dst} is {family}")
        if given and dst.version not in given:
            raise _invalid(where, f"{dst} is an {family} route but ipam gives no {family} "
                                  "address", f"add an {family} range set to ipam.ranges "
                                             f"(or drop the route): the pod would have no "
                                             f"{family} address or gateway to use it with")


def gateways(ipam: Mapping[str, Any]) -> Optional[list[tuple[IPNetwork, IPAddress]]]:
    """(subnet, gateway) of each address host-local will give, in its answer's order, when
    its config says (each range set of one subnet and gateway); None otherwise. host-local
    answers with the address in its range's subnet and the range's gateway, by default the
    subnet's first address."""
    if ipam.get("type") != "host-local":
        return None
    if "ranges" in ipam:
        sets = ipam["ranges"]
    elif "subnet" in ipam:
        sets = [[ipam]]
    else:
        return None
    found = []
    for range_set in sets:
        seen = set()
        for item in range_set:
            subnet = ipaddress.ip_network(item["subnet"], strict=False)
            gateway = ipaddress.ip_address(item["gateway"]) if item.get("gateway") else \
                subnet.network_address + 1
            seen.add((subnet, gateway))
        if len(seen) != 1:
            return None  # which range answers decides the gateway: only IPAM knows
        found.append(seen.pop())
    return found
