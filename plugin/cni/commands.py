"""One function per CNI command. cmd_add reads as its pipeline:
config -> IPAM (started) -> veth pair -> routes via the gateways (while IPAM works, when its
config names them) -> IPAM's answer: the addresses -> cross-node -> result, with every step
registering its undo on a stack that is committed only when the whole attachment exists.
"""
from __future__ import annotations

import errno
import ipaddress
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Optional

from plugin.cni import hostlocal, ranges, result, wiring
from plugin.cni.deadline import Deadline
from plugin.cni.errors import (
    CHECK_MISMATCH,
    CROSS_NODE_FAILURE,
    GC_INCOMPLETE,
    INCOMPATIBLE_VERSION,
    INTERFACE_EXISTS,
    INVALID_CONFIG,
    INVALID_ENV,
    NETLINK_FAILURE,
    STATUS_ATTACHMENTS_AFFECTED,
    STATUS_CANNOT_ADD,
    TRY_AGAIN_LATER,
    UNKNOWN_CONTAINER,
    CniError,
)
from plugin.cni.ipam import Ipam, PendingAdd, PendingCall
from plugin.cni.log import CallLog
from plugin.cni.netconf import ClusterNode, NetConf
from plugin.cni.rundir import run_dir
from plugin.cni.undo import UndoStack
from plugin.crossnode.localaddr import addresses_on
from plugin.crossnode.locking import DEFAULT_TIMEOUT as LOCK_TIMEOUT

# Tests only: make ADD fail right after the named step ("ipam", "pod", "host", "crossnode")
# to prove the rollback leaves nothing behind.
FAIL_AFTER_ENV = "CNILAB_TEST_FAIL_AFTER"
INJECTED_FAILURE = 199


@dataclass(frozen=True)
class Call:
    """The CNI_* environment of one call, validated by the dispatcher."""

    command: str
    container_id: str
    netns: str
    ifname: str
    args: dict[str, str]
    cni_path: str
    env: Mapping[str, str]
    deadline: Deadline
    # Whether the process that asked for this call is gone (the resident helper's workers
    # run calls for other processes): an ADD for a caller that died is undone, not kept.
    abandoned: Callable[[], bool]


# --- helpers shared by the commands ---------------------------------------------------------

@contextmanager
def _crossnode_step() -> Iterator[Any]:
    """The cross-node datapath (plugin.crossnode, loaded only when a backend is set), with
    its errors turned into CNI errors: a config problem (7), a busy lock (11), a refusal
    from the kernel (104)."""
    from plugin import crossnode
    from plugin.crossnode.errors import Busy, CrossNodeError, Misconfigured

    try:
        yield crossnode
    except Misconfigured as e:
        raise CniError(INVALID_CONFIG, f"invalid network config: {e.msg}", e.details) from None
    except Busy as e:
        raise CniError(TRY_AGAIN_LATER, e.msg, e.details) from None
    except CrossNodeError as e:
        raise CniError(CROSS_NODE_FAILURE, e.msg, e.details) from None


def _this_node(conf: NetConf) -> Optional[ClusterNode]:
    """This node's entry when the network spans nodes; None for plain ptp (backend none)."""
    if conf.backend == "none":
        return None
    with _crossnode_step() as crossnode:
        node: ClusterNode = crossnode.find_self(conf.topology)
        return node


def _missing_peers(conf: NetConf, me: ClusterNode) -> list[str]:
    with _crossnode_step() as crossnode:
        found: list[str] = crossnode.missing_peers(conf.topology, me)
        return found


def _ipam_conf(conf: NetConf, me: Optional[ClusterNode]) -> dict[str, Any]:
    """conf.ipam, given this node's pod subnets (a range set per family) when it names no
    range of its own."""
    if me is None or "ranges" in conf.ipam or "subnet" in conf.ipam:
        return dict(conf.ipam)
    return dict(conf.ipam, ranges=[[{"subnet": str(s)}] for s in me.pod_subnets])


@contextmanager
def _netlink_step(what: str) -> Iterator[None]:
    """Turns a netlink failure into CniError(102) that says which step failed and why."""
    try:
        yield
    except CniError:
        raise
    except Exception as e:  # pyroute2's NetlinkError (and its OSErrors) carry .code/.errno
        raise wiring.netlink_error(what, e) from None


@contextmanager
def _closing(ipr: Any) -> Iterator[Any]:
    try:
        yield ipr
    finally:
        ipr.close()


def _open_pod(call: Call) -> Any:
    try:
        return wiring.open_netns(call.netns)
    except wiring.NamespaceGone:
        raise CniError(UNKNOWN_CONTAINER, f"CNI_NETNS {call.netns} does not exist",
                       "the container's network namespace is gone or was never made") from None
    except wiring.NodeNamespace:
        raise _node_namespace(call) from None


def _refuse_node_namespace(call: Call) -> None:
    try:
        wiring.refuse_node_namespace(call.netns)
    except wiring.NodeNamespace:
        raise _node_namespace(call) from None


def _node_namespace(call: Call) -> CniError:
    return CniError(INVALID_ENV, f"CNI_NETNS {call.netns} is the node's own network namespace, "
                                 "not a pod's", "a pod's interface and default route would "
                                 "land on the node itself")


def _ipam(conf: NetConf, call: Call, me: Optional[ClusterNode]) -> Ipam:
    return Ipam(_ipam_conf(conf, me), call.env, call.deadline)


def _fail_if_asked(call: Call, step: str) -> None:
    if call.env.get(FAIL_AFTER_ENV) == step:
        raise CniError(INJECTED_FAILURE, f"injected failure after {step} ({FAIL_AFTER_ENV})")


def _plan(allocated: result.Result) -> tuple[list[wiring.PodAddress], list[wiring.PodRoute]]:
    """What the pod gets from IPAM's answer: addresses of either family with their gateways,
    and routes via the first gateway of their family (as ptp), or the route's own."""
    addresses = []
    for ip in allocated["ips"]:
        iface = ipaddress.ip_interface(ip["address"])
        gateway = ipaddress.ip_address(ip["gateway"]) if ip.get("gateway") else \
            iface.network.network_address + 1
        if gateway.version != iface.version or gateway == iface.ip:
            raise CniError(INVALID_CONFIG, f"invalid network config: ipam: address {iface} has "
                                           f"no usable gateway ({gateway})",
                           "a gateway is of its address's family and not the address itself")
        ip["gateway"] = str(gateway)
        addresses.append(wiring.PodAddress(iface, gateway))
    return addresses, _plan_routes(allocated["routes"], [a.routed_by for a in addresses])


def _plan_routes(raw: list[dict[str, Any]],
                 gateways: list[wiring.PodGateway]) -> list[wiring.PodRoute]:
    first: dict[int, wiring.IPAddress] = {}
    for g in gateways:
        first.setdefault(g.address.version, g.address)
    routes = []
    for route in raw:
        dst = ipaddress.ip_network(route["dst"], strict=False)
        family = f"IPv{dst.version}"
        gw = ipaddress.ip_address(route["gw"]) if route.get("gw") else first.get(dst.version)
        if gw is None:
            raise CniError(INVALID_CONFIG, f"invalid network config: ipam: route {dst} is "
                                           f"{family} but IPAM gave no {family} address",
                           f"add an {family} range to ipam, or drop the route")
        if gw.version != dst.version:
            raise CniError(INVALID_CONFIG, f"invalid network config: ipam: route {dst} has "
                                           f"gateway {gw} of the other family")
        routes.append(wiring.PodRoute(dst, gw))
    return routes


Plan = tuple[list[wiring.PodGateway], list[wiring.PodRoute]]


def _expected(ipam: Ipam) -> Optional[Plan]:
    """The gateways and routes IPAM's answer will bring, when its config says (host-local
    with one subnet and gateway per range set); None when only the answer can tell."""
    found = ranges.gateways(ipam.conf)
    if not found:
        return None
    gateways = [wiring.PodGateway(subnet, gateway) for subnet, gateway in found]
    try:
        return gateways, _plan_routes(list(ipam.conf.get("routes") or []), gateways)
    except CniError:
        return None  # the answer says what is wrong


def _families(ips: list[dict[str, Any]]) -> set[int]:
    return {ipaddress.ip_interface(ip["address"]).version for ip in ips}


def _route_collision(conf: NetConf, call: Call, pod: Any, index: int,
                     gateways: list[wiring.PodGateway],
                     routes: list[wiring.PodRoute]) -> Optional[CniError]:
    """Which of our routes the pod already has (EEXIST), said so a user can fix the config.

    The usual case: a secondary network (Multus' net1) whose IPAM routes include 0.0.0.0/0,
    while eth0 already holds the pod's default route. None when no route explains it.
    """
    ours = {str(r.dst): f"{r.dst} via {r.gateway}" for r in routes}
    for g in gateways:
        host = wiring.host_prefix(g.address)
        ours.setdefault(str(host), f"{host}" + (" scope link" if g.address.version == 4 else ""))
        ours.setdefault(str(g.subnet), f"{g.subnet} via {g.address}")
    families = wiring.dump_family(g.address.version for g in gateways)
    for dst, gw, oif in wiring.routes_via(pod, None, families):
        if oif == index or dst not in ours:
            continue
        try:
            dev = wiring.link_info(pod, oif)["name"] if oif else "?"
        except Exception:  # gone meanwhile: still worth naming the route
            dev = f"index {oif}"
        theirs = f"{dst}" + (f" via {gw}" if gw else "") + f" dev {dev}"
        default = dst in ("0.0.0.0/0", "::/0")
        why = (f"the pod already has a route to {dst} ({theirs})"
               + (f", typically {dev}'s default route when {call.ifname} is a secondary "
                  "network" if default else ""))
        pods = _pod_cidr(conf, gateways, ipaddress.ip_network(dst).version)
        if dst in {str(g.subnet) for g in gateways}:
            # our own subnet route, not one of ipam.routes: the pod has this subnet already
            fix = (f"{dst} is this network's pod subnet and {dev} already routes it: a pod "
                   f"takes one attachment per subnet; attach another network (its own pod "
                   f"subnet) as {call.ifname}")
        else:
            fix = (f"route only the pod CIDR over {call.ifname}: set ipam.routes to "
                   f'[{{"dst": "{pods}"}}] instead of {dst}'
                   + (" (the default route stays on the primary interface)"
                      if default else ""))
        return CniError(NETLINK_FAILURE,
                        f"configuring {call.ifname} in the pod: route {ours[dst]} dev "
                        f"{call.ifname} collides: {why}", fix)
    return None


def _pod_cidr(conf: NetConf, gateways: list[wiring.PodGateway], family: int) -> str:
    """The smallest network holding every node's pod subnet of `family` (or this pod's)."""
    subnets = [s for n in conf.nodes for s in n.pod_subnets if s.version == family] or \
        [g.subnet for g in gateways if g.subnet.version == family]
    net: Any = subnets[0]  # of `family`, as every subnet here
    while not all(s.subnet_of(net) for s in subnets):
        net = net.supernet()
    return str(net)


# --- ADD ------------------------------------------------------------------------------------

def cmd_add(conf: NetConf, call: Call, log: CallLog) -> result.Result:
    # Everything that can refuse the call does so before anything is made.
    prev = None if conf.prev_result is None else result.normalize(conf.prev_result,
                                                                   "prevResult")
    _refuse_node_namespace(call)
    me = _this_node(conf)
    ipam = _ipam(conf, call, me)
    # IPAM starts first with its config held back: its runtime starts while we open the
    # namespaces and check the pod, and it allocates nothing until released (an IPAM plugin
    # reads its config before anything else), so when the pod already has the interface
    # (maybe a live attachment's) it is stopped having done nothing.
    allocation = ipam.start_add(conf.raw, conf.cni_version, hold=True)
    try:
        ours = _add(conf, call, log, ipam, allocation, me)
    finally:
        allocation.call.discard()  # only if it was never released
    return ours if prev is None else result.merge(prev, ours)


def _add(conf: NetConf, call: Call, log: CallLog, ipam: Ipam, allocation: PendingAdd,
         me: Optional[ClusterNode]) -> result.Result:
    host_name = wiring.host_veth_name(conf.name, call.container_id, call.ifname)
    alias = wiring.attachment_alias(conf.name, call.container_id, call.ifname)

    with _closing(_open_pod(call)) as pod, _closing(wiring.open_node()) as node, \
            UndoStack(log) as undo:
        if wiring.link_by_name(pod, call.ifname) is not None:
            raise CniError(INTERFACE_EXISTS, f"interface {call.ifname} already exists in "
                                             f"{call.netns}", "pick another CNI_IFNAME or DEL "
                                             "the attachment that made it")

        # IPAM works while we make the veth pair, which does not need the address.
        allocation.call.release()

        def release() -> None:
            # Even when IPAM failed: one killed at the deadline may have written its lease
            # (an IPAM DEL of nothing succeeds). Undoing may run past the budget, a little.
            allocation.call.answer_quietly()
            ipam.with_deadline(call.deadline.for_cleanup()).delete(conf.raw, conf.cni_version)

        undo.push("release the IPAM allocation", release)
        pod_mac, host_mac = wiring.random_mac(), wiring.random_mac()
        with _netlink_step(f"creating veth {call.ifname} (pod) / {host_name} (node)"):
            try:
                wiring.create_veth(pod, call.ifname, host_name, conf.pod_mtu, pod_mac, host_mac)
            except Exception as e:
                if getattr(e, "code", None) == errno.EEXIST and \
                        wiring.link_by_name(node, host_name) is not None:
                    raise CniError(INTERFACE_EXISTS, f"host veth {host_name} already exists "
                                                     "on the node", "a leftover of this "
                                                     "attachment? run DEL (or GC) for it "
                                                     "first") from None
                raise
        undo.push(f"delete veth {call.ifname}", lambda: wiring.delete_link(pod, call.ifname))
        with _netlink_step(f"claiming host veth {host_name}"):
            pod_link = wiring.link_by_name(pod, call.ifname)
            if pod_link is None:
                raise CniError(NETLINK_FAILURE, f"veth {call.ifname} vanished right after it "
                                                "was created")
            host_index = pod_link["peer"]  # a veth names its peer's index: no lookup needed
            if not host_index:
                host_link = wiring.link_by_name(node, host_name)
                host_index = host_link["index"] if host_link else None
            if not host_index:
                raise CniError(NETLINK_FAILURE, f"host veth {host_name} vanished right after "
                                                "it was created")
            wiring.settle_host_veth(host_name)
            wiring.claim_host(node, host_index, host_name, alias)

        # While IPAM still works, what its config says it will route through goes in: the
        # routes need the gateways, not the addresses (host-local's answer is known but for
        # the addresses, so that is all that is left to do once it comes).
        expected = _expected(ipam)
        if expected is not None:
            _route(conf, call, pod, node, pod_link, host_name, host_index, *expected)

        allocated = allocation.result()
        addresses, routes = _plan(allocated)
        log.info(f"IPAM {ipam.type} gave {', '.join(str(a.address) for a in addresses)}")
        _fail_if_asked(call, "ipam")
        planned: Plan = ([a.routed_by for a in addresses], routes)
        if planned != expected:
            if expected is not None:  # IPAM answered otherwise than its config said
                _route(conf, call, pod, node, pod_link, host_name, host_index, *expected,
                       withdraw=True)
            _route(conf, call, pod, node, pod_link, host_name, host_index, *planned)

        with _netlink_step(f"configuring {call.ifname} in the pod"):
            wiring.configure_pod_addresses(pod, pod_link["index"], addresses)
        _fail_if_asked(call, "pod")
        with _netlink_step(f"configuring host veth {host_name}"):
            wiring.configure_host_routes(node, host_index, addresses)
        wiring.enable_forwarding(a.address.version for a in addresses)
        _fail_if_asked(call, "host")

        if me is not None:
            with _crossnode_step() as crossnode:
                crossnode.ensure_peers(conf.topology, me, run_dir(),
                                       min(LOCK_TIMEOUT, call.deadline.remaining()))
        _fail_if_asked(call, "crossnode")

        ours: result.Result = {
            "interfaces": [{"name": host_name, "mac": host_mac, "mtu": conf.pod_mtu},
                           {"name": call.ifname, "mac": pod_mac, "mtu": conf.pod_mtu,
                            "sandbox": call.netns}],
            "ips": [dict(ip, interface=1) for ip in allocated["ips"]],
            "routes": allocated["routes"],
        }
        if conf.dns or allocated.get("dns"):
            ours["dns"] = conf.dns or allocated["dns"]
        if call.abandoned():  # the runtime gave up, and may have run DEL meanwhile
            raise CniError(TRY_AGAIN_LATER, "the caller of this ADD is gone: undone",
                           "its runtime stopped waiting; nothing of it is kept")
        undo.commit()
    log.info(f"added {call.ifname} ({pod_mac}) <-> {host_name}")
    return ours


def _route(conf: NetConf, call: Call, pod: Any, node: Any, pod_link: dict[str, Any],
           host_name: str, host_index: int, gateways: list[wiring.PodGateway],
           routes: list[wiring.PodRoute], withdraw: bool = False) -> None:
    """The pod's routes via `gateways`, and the gateways on the host veth (or, `withdraw`,
    out again): IPv6 turned on where it is needed first."""
    ipv6 = any(g.address.version == 6 for g in gateways)
    with _netlink_step(f"configuring {call.ifname} in the pod"):
        if ipv6 and pod_link["ipv6_disabled"] and not withdraw:
            wiring.enable_ipv6_in(call.netns, call.ifname)
            pod_link["ipv6_disabled"] = False
        try:
            wiring.configure_pod_routes(pod, pod_link["index"], gateways, routes, withdraw)
        except Exception as e:
            if getattr(e, "code", None) == errno.EEXIST:
                collision = _route_collision(conf, call, pod, pod_link["index"], gateways,
                                             routes)
                if collision is not None:
                    raise collision from None
            raise
    with _netlink_step(f"configuring host veth {host_name}"):
        if ipv6 and not withdraw:
            wiring.allow_ipv6_on_host_veth(host_name)
        wiring.configure_host_gateways(node, host_index, gateways, withdraw)


# --- DEL ------------------------------------------------------------------------------------

def cmd_del(conf: NetConf, call: Call, log: CallLog) -> None:
    """Best effort: tear down what exists, release the lease, succeed when all is gone.

    Only the host veth is deleted (its pod end goes with it): it is found by name and its
    alias proves it is ours, whereas an interface called CNI_IFNAME in the pod may belong to
    another plugin when our ADD failed with "already exists". The IPAM release runs while
    the veth is deleted.
    """
    ipam_error: Optional[CniError] = None
    release: Optional[PendingCall] = None
    try:
        me = _this_node(conf)
        release = _ipam(conf, call, me).start_delete(conf.raw, conf.cni_version)
    except CniError as e:
        ipam_error = e

    host_name = wiring.host_veth_name(conf.name, call.container_id, call.ifname)
    alias = wiring.attachment_alias(conf.name, call.container_id, call.ifname)
    try:
        with _closing(wiring.open_node()) as node, \
                _netlink_step(f"deleting host veth {host_name}"):
            link = wiring.link_by_name(node, host_name)
            if link is not None:
                if link["alias"] == alias or wiring.half_made(link):
                    wiring.delete_until_unlisted(link["index"], host_name)
                    log.info(f"deleted {host_name} and its pod end {call.ifname}")
                else:
                    log.warn(f"{host_name} has alias {link['alias']!r}, not {alias!r}: "
                             "left alone")
    finally:
        if release is not None:
            try:
                release.answer()
            except CniError as e:
                ipam_error = e
        if ipam_error is not None:
            log.error(f"IPAM release failed: {ipam_error.msg} {ipam_error.details}")
    if ipam_error is not None:
        raise ipam_error


# --- CHECK ----------------------------------------------------------------------------------

def _find_interface(prev: result.Result, name: str,
                    sandbox: Optional[str]) -> Optional[int]:
    for i, iface in enumerate(prev["interfaces"]):
        if iface["name"] == name and (sandbox is None or iface.get("sandbox") == sandbox):
            return i
    return None


def _check_pod(pod: Any, call: Call, conf: NetConf, prev: result.Result,
               pod_index: int) -> list[str]:
    problems: list[str] = []
    info = wiring.link_by_name(pod, call.ifname)
    if info is None:
        return [f"pod: interface {call.ifname} is missing in {call.netns}"]
    index = info["index"]
    want_mac = prev["interfaces"][pod_index].get("mac")
    if want_mac and str(info["mac"]).lower() != str(want_mac).lower():
        problems.append(f"pod: {call.ifname} has MAC {info['mac']}, prevResult says {want_mac}")
    if info["mtu"] != conf.pod_mtu:
        problems.append(f"pod: {call.ifname} has MTU {info['mtu']}, config wants {conf.pod_mtu}")
    if not info["up"]:
        problems.append(f"pod: {call.ifname} is down")
    ours = [ip for ip in prev["ips"] if ip.get("interface") == pod_index]
    families = wiring.dump_family(_families(ours) | _route_families(prev))
    present = {str(ipaddress.ip_interface(a)) for a in addresses_on(pod, index, families)}
    for ip in ours:
        if str(ipaddress.ip_interface(ip["address"])) not in present:
            shown = sorted(a for a in present if not a.startswith("fe80:"))
            problems.append(f"pod: address {ip['address']} is missing on {call.ifname} "
                            f"(has {', '.join(shown) or 'none'})")
    # Routes carry no interface in a result: in a conflist some are another plugin's, so a
    # route counts as present on any device, with the gateway the result names (if any).
    routes = wiring.routes_via(pod, None, families)
    for r in prev["routes"]:
        dst = str(ipaddress.ip_network(r["dst"], strict=False))
        gw = str(ipaddress.ip_address(r["gw"])) if r.get("gw") else None
        if not any(d == dst and (gw is None or g == gw) for d, g, _oif in routes):
            problems.append(f"pod: route {dst}" + (f" via {gw}" if gw else "") + " is missing")
    return problems


def _route_families(res: result.Result) -> set[int]:
    return {ipaddress.ip_network(r["dst"], strict=False).version for r in res["routes"]}


def _check_host(node: Any, conf: NetConf, call: Call, prev: result.Result,
                pod_index: int) -> list[str]:
    host_name = wiring.host_veth_name(conf.name, call.container_id, call.ifname)
    info = wiring.link_by_name(node, host_name)
    if info is None:
        return [f"node: host veth {host_name} is missing"]
    index = info["index"]
    problems = []
    alias = wiring.attachment_alias(conf.name, call.container_id, call.ifname)
    if info["alias"] != alias:
        problems.append(f"node: {host_name} has alias {info['alias']!r}, expected {alias!r}")
    if not info["up"]:
        problems.append(f"node: {host_name} is down")
    ours = [ip for ip in prev["ips"] if ip.get("interface") == pod_index]
    families = wiring.dump_family(_families(ours))
    routes = {d for d, _gw, _oif in wiring.routes_via(node, index, families)}
    gateways = set(addresses_on(node, index, families))
    for ip in ours:
        pod_ip = str(wiring.host_prefix(ipaddress.ip_interface(ip["address"]).ip))
        if pod_ip not in routes:
            problems.append(f"node: route {pod_ip} dev {host_name} is missing")
        if ip.get("gateway"):
            gateway = str(wiring.host_prefix(ipaddress.ip_address(ip["gateway"])))
            if gateway not in gateways:
                problems.append(f"node: gateway {gateway} is missing on {host_name}")
    return problems


def cmd_check(conf: NetConf, call: Call, log: CallLog) -> None:
    if conf.prev_result is None:
        raise CniError(INVALID_CONFIG, "invalid network config: prevResult: missing",
                       "CHECK compares the system with the ADD result the runtime passes")
    prev = result.normalize(conf.prev_result, "prevResult")
    _refuse_node_namespace(call)
    me = _this_node(conf)
    pod_index = _find_interface(prev, call.ifname, call.netns)
    if pod_index is None:
        raise CniError(CHECK_MISMATCH, f"prevResult has no interface {call.ifname} in "
                                       f"{call.netns}")
    ipam = _ipam(conf, call, me)
    ipam_check = ipam.start("CHECK", conf.raw, conf.cni_version)  # runs while we look

    try:
        with _closing(_open_pod(call)) as pod, _closing(wiring.open_node()) as node:
            problems = _check_pod(pod, call, conf, prev, pod_index)
            problems += _check_host(node, conf, call, prev, pod_index)
    except Exception:
        ipam_check.answer()  # IPAM's own failure comes first, as when it ran alone
        raise
    ipam_check.answer()
    if me is not None:
        problems += [f"cross-node: {p}" for p in _missing_peers(conf, me)]
    if problems:
        raise CniError(CHECK_MISMATCH, f"CHECK: {problems[0]}"
                       + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
                       "\n".join(problems))
    log.info("CHECK: all as added")


# --- STATUS ---------------------------------------------------------------------------------

def cmd_status(conf: NetConf, call: Call, log: CallLog) -> None:
    try:
        me = _this_node(conf)
        ipam = _ipam(conf, call, me)
    except CniError as e:
        raise CniError(STATUS_CANNOT_ADD, f"cannot serve ADD: {e.msg}", e.details) from None
    if 6 in ranges.families(ipam.conf, conf.pod_families) and not wiring.has_ipv6():
        raise CniError(STATUS_CANNOT_ADD, f"cannot serve ADD: {wiring.NO_IPV6}",
                       "the network gives pods IPv6 addresses")
    if "1.1.0" in ipam.supported_versions():
        try:
            ipam.call("STATUS", conf.raw, conf.cni_version)
        except CniError as e:
            code = e.code if e.code in (STATUS_CANNOT_ADD, STATUS_ATTACHMENTS_AFFECTED) \
                else STATUS_CANNOT_ADD
            raise CniError(code, e.msg, e.details) from None
    else:
        log.info(f"IPAM {ipam.type} has no STATUS (pre-1.1.0): found on CNI_PATH, taken as ready")
    if me is not None:
        problems = _missing_peers(conf, me)
        if problems:
            raise CniError(STATUS_ATTACHMENTS_AFFECTED,
                           f"existing attachments affected: {problems[0]}", "\n".join(problems))


# --- GC -------------------------------------------------------------------------------------

def _valid_attachments(raw: Mapping[str, Any]) -> set[tuple[str, str]]:
    keys = [k for k in ("cni.dev/valid-attachments", "cni.dev/attachments") if k in raw]
    if not keys:
        raise CniError(INVALID_CONFIG, "invalid network config: cni.dev/valid-attachments: "
                                       "missing", "GC needs the attachments to keep; send [] "
                                       "to remove every attachment of this network")
    valid: set[tuple[str, str]] = set()
    for key in keys:
        items = raw[key]
        if not isinstance(items, list):
            raise CniError(INVALID_CONFIG, f"invalid network config: {key}: must be a list")
        for n, item in enumerate(items):
            if not (isinstance(item, dict) and isinstance(item.get("containerID"), str)
                    and isinstance(item.get("ifname"), str)):
                raise CniError(INVALID_CONFIG, f"invalid network config: {key}[{n}]: needs "
                                               "containerID and ifname strings")
            valid.add((item["containerID"], item["ifname"]))
    return valid


def cmd_gc(conf: NetConf, call: Call, log: CallLog) -> None:
    """Removes every attachment of this network not listed; keeps going past failures."""
    valid = _valid_attachments(conf.raw)
    me = _this_node(conf)
    ipam = _ipam(conf, call, me)
    failures: list[str] = []
    stale: set[tuple[str, str]] = set()

    with _closing(wiring.open_node()) as node:
        for host_name, container_id, ifname in wiring.attachments_on_node(node, conf.name):
            if (container_id, ifname) in valid:
                continue
            stale.add((container_id, ifname))
            try:
                with _netlink_step(f"deleting {host_name} of {container_id}/{ifname}"):
                    wiring.delete_link(node, host_name)
                log.info(f"GC: deleted {host_name} ({container_id}/{ifname})")
            except CniError as e:
                failures.append(e.msg)

    if ipam.type == "host-local":
        valid_ids = {cid for cid, _ in valid}
        for lease in hostlocal.leases(ipam.conf, conf.name):
            if not lease.ifname:  # pre-1.0 host-local wrote no ifname: IPAM DEL can't name it
                if lease.container_id not in valid_ids:
                    try:
                        os.remove(lease.path)
                        log.info(f"GC: removed lease {lease.ip} of {lease.container_id}")
                    except OSError as e:
                        if e.errno != errno.ENOENT:
                            failures.append(f"removing lease {lease.path}: {e.strerror}")
                continue
            if (lease.container_id, lease.ifname) not in valid:
                stale.add((lease.container_id, lease.ifname))

    left = sorted(stale)
    while left and call.deadline.remaining() > 0:
        container_id, ifname = left.pop(0)
        try:
            ipam.delete(conf.raw, conf.cni_version, container_id, ifname)
            log.info(f"GC: released the IPAM lease of {container_id}/{ifname}")
        except CniError as e:
            failures.append(f"releasing {container_id}/{ifname}: {e.msg} {e.details}".strip())
    if left:
        failures.append(f"out of time ({call.deadline.seconds:.0f}s) before releasing "
                        f"{len(left)} more: {', '.join(f'{c}/{i}' for c, i in left)}")

    try:
        if "1.1.0" in ipam.supported_versions():
            ipam.call("GC", conf.raw, conf.cni_version)
    except CniError as e:
        failures.append(f"IPAM {ipam.type} GC: {e.msg} {e.details}".strip())

    if failures:
        raise CniError(GC_INCOMPLETE, f"GC: {len(failures)} cleanup(s) failed: {failures[0]}",
                       "\n".join(failures))


def unsupported_for(command: str, version: str) -> Optional[CniError]:
    if command in ("STATUS", "GC") and result.version_key(version) < (1, 1, 0):
        return CniError(INCOMPATIBLE_VERSION, f"{command} needs cniVersion 1.1.0 or newer",
                        f"the config says {version}")
    return None
