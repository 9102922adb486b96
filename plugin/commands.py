"""One function per CNI command. cmd_add reads as its pipeline:
config -> IPAM -> pod side -> host side -> cross-node -> result, with every step registering
its undo on a stack that is committed only when the whole attachment exists.
"""
from __future__ import annotations

import errno
import ipaddress
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Optional

from plugin import result, wiring
from plugin.errors import (
    CHECK_MISMATCH,
    GC_INCOMPLETE,
    INCOMPATIBLE_VERSION,
    INTERFACE_EXISTS,
    INVALID_CONFIG,
    NETLINK_FAILURE,
    STATUS_ATTACHMENTS_AFFECTED,
    STATUS_CANNOT_ADD,
    UNKNOWN_CONTAINER,
    UNSUPPORTED_FIELD,
    CniError,
)
from plugin.ipam import Ipam, PendingAdd, PendingCall
from plugin.log import CallLog
from plugin.netconf import ClusterNode, NetConf
from plugin.undo import UndoStack

# Tests only: make ADD fail right after the named step ("ipam", "pod", "host", "crossnode")
# to prove the rollback leaves nothing behind.
FAIL_AFTER_ENV = "CNILAB_TEST_FAIL_AFTER"
INJECTED_FAILURE = 199
HOST_LOCAL_DEFAULT_DIR = "/var/lib/cni/networks"


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


# --- helpers shared by the commands ---------------------------------------------------------

def _this_node(conf: NetConf) -> Optional[ClusterNode]:
    """This node's entry when the network spans nodes; None for plain ptp (backend none)."""
    if conf.backend == "none":
        return None
    from plugin import crossnode

    return crossnode.find_self(conf)


def _ipam_conf(conf: NetConf, me: Optional[ClusterNode]) -> dict[str, Any]:
    """conf.ipam, given this node's pod subnet when it names no range of its own."""
    if me is None or "ranges" in conf.ipam or "subnet" in conf.ipam:
        return dict(conf.ipam)
    return dict(conf.ipam, ranges=[[{"subnet": str(me.pod_subnet)}]])


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


def _fail_if_asked(call: Call, step: str) -> None:
    if call.env.get(FAIL_AFTER_ENV) == step:
        raise CniError(INJECTED_FAILURE, f"injected failure after {step} ({FAIL_AFTER_ENV})")


def _plan(allocated: result.Result) -> tuple[list[wiring.PodAddress], list[wiring.PodRoute]]:
    """What the pod gets from IPAM's answer: IPv4 addresses with gateways, routes via them."""
    addresses = []
    for ip in allocated["ips"]:
        iface = ipaddress.ip_interface(ip["address"])
        if not isinstance(iface, ipaddress.IPv4Interface):
            raise CniError(UNSUPPORTED_FIELD, f"IPAM gave {iface}: cnilab wires IPv4 only")
        gateway = ipaddress.ip_address(ip["gateway"]) if ip.get("gateway") else \
            iface.network.network_address + 1
        if not isinstance(gateway, ipaddress.IPv4Address) or gateway == iface.ip:
            raise CniError(INVALID_CONFIG, f"invalid network config: ipam: address {iface} has "
                                           f"no usable gateway ({gateway})")
        ip["gateway"] = str(gateway)
        addresses.append(wiring.PodAddress(iface, gateway))
    routes = []
    for route in allocated["routes"]:
        dst = ipaddress.ip_network(route["dst"], strict=False)
        if not isinstance(dst, ipaddress.IPv4Network):
            raise CniError(UNSUPPORTED_FIELD, f"IPAM route to {dst}: cnilab wires IPv4 only")
        gw = ipaddress.IPv4Address(route["gw"]) if route.get("gw") else addresses[0].gateway
        routes.append(wiring.PodRoute(dst, gw))
    return addresses, routes


# --- ADD ------------------------------------------------------------------------------------

def cmd_add(conf: NetConf, call: Call, log: CallLog) -> result.Result:
    me = _this_node(conf)
    ipam = Ipam(_ipam_conf(conf, me), call.env)
    # IPAM starts first with its config held back: its runtime starts while we open the
    # namespaces and check the pod, and it allocates nothing until released (an IPAM plugin
    # reads its config before anything else), so when the pod already has the interface
    # (maybe a live attachment's) it is stopped having done nothing.
    allocation = ipam.start_add(conf.raw, conf.cni_version, hold=True)
    try:
        ours = _add(conf, call, log, ipam, allocation, me)
    finally:
        allocation.call.discard()  # only if it was never released
    if conf.prev_result is not None:
        return result.merge(result.normalize(conf.prev_result, "prevResult"), ours)
    return ours


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
            if allocation.call.succeeded():  # a failed ADD allocated nothing
                ipam.delete(conf.raw, conf.cni_version)

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
            wiring.claim_host(node, host_index, host_name, alias)

        allocated = allocation.result()
        addresses, routes = _plan(allocated)
        log.info(f"IPAM {ipam.type} gave {', '.join(str(a.address) for a in addresses)}")
        _fail_if_asked(call, "ipam")

        with _netlink_step(f"configuring {call.ifname} in the pod"):
            wiring.configure_pod(pod, pod_link["index"], addresses, routes)
        _fail_if_asked(call, "pod")

        with _netlink_step(f"configuring host veth {host_name}"):
            wiring.configure_host(node, host_index, addresses)
        wiring.enable_ipv4_forwarding()
        _fail_if_asked(call, "host")

        if me is not None:
            from plugin import crossnode

            crossnode.ensure_peers(conf, me)
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
        undo.commit()
    log.info(f"added {call.ifname} ({pod_mac}) <-> {host_name}")
    return ours


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
        release = Ipam(_ipam_conf(conf, me), call.env).start_delete(conf.raw,
                                                                    conf.cni_version)
    except CniError as e:
        ipam_error = e

    host_name = wiring.host_veth_name(conf.name, call.container_id, call.ifname)
    alias = wiring.attachment_alias(conf.name, call.container_id, call.ifname)
    try:
        with _closing(wiring.open_node()) as node, \
                _netlink_step(f"deleting host veth {host_name}"):
            link = wiring.link_by_name(node, host_name)
            if link is not None:
                if link["alias"] == alias:
                    wiring.delete_index(node, link["index"])
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
    present = set(wiring.addresses_on(pod, index))
    ours = [ip for ip in prev["ips"] if ip.get("interface") == pod_index]
    for ip in ours:
        if ip["address"] not in present:
            problems.append(f"pod: address {ip['address']} is missing on {call.ifname} "
                            f"(has {', '.join(sorted(present)) or 'none'})")
    # Routes carry no interface in a result: in a conflist some are another plugin's, so a
    # route counts as present on any device, with the gateway the result names (if any).
    routes = wiring.routes_via(pod, None)
    for r in prev["routes"]:
        dst = str(ipaddress.ip_network(r["dst"], strict=False))
        if ipaddress.ip_network(dst).version != 4:
            continue
        gw = r.get("gw")
        if not any(d == dst and (gw is None or g == gw) for d, g in routes):
            problems.append(f"pod: route {dst}" + (f" via {gw}" if gw else "") + " is missing")
    return problems


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
    routes = wiring.routes_via(node, index)
    for ip in prev["ips"]:
        if ip.get("interface") != pod_index:
            continue
        pod_ip = f"{ipaddress.ip_interface(ip['address']).ip}/32"
        if not any(d == pod_ip for d, _ in routes):
            problems.append(f"node: route {pod_ip} dev {host_name} is missing")
    return problems


def cmd_check(conf: NetConf, call: Call, log: CallLog) -> None:
    if conf.prev_result is None:
        raise CniError(INVALID_CONFIG, "invalid network config: prevResult: missing",
                       "CHECK compares the system with the ADD result the runtime passes")
    prev = result.normalize(conf.prev_result, "prevResult")
    me = _this_node(conf)
    pod_index = _find_interface(prev, call.ifname, call.netns)
    if pod_index is None:
        raise CniError(CHECK_MISMATCH, f"prevResult has no interface {call.ifname} in "
                                       f"{call.netns}")
    ipam = Ipam(_ipam_conf(conf, me), call.env)
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
        from plugin import crossnode

        problems += [f"cross-node: {p}" for p in crossnode.missing_peers(conf, me)]
    if problems:
        raise CniError(CHECK_MISMATCH, f"CHECK: {problems[0]}"
                       + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
                       "\n".join(problems))
    log.info("CHECK: all as added")


# --- STATUS ---------------------------------------------------------------------------------

def cmd_status(conf: NetConf, call: Call, log: CallLog) -> None:
    try:
        me = _this_node(conf)
        ipam = Ipam(_ipam_conf(conf, me), call.env)
    except CniError as e:
        raise CniError(STATUS_CANNOT_ADD, f"cannot serve ADD: {e.msg}", e.details) from None
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
        from plugin import crossnode

        problems = crossnode.missing_peers(conf, me)
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


def host_local_leases(ipam_conf: Mapping[str, Any],
                      network: str) -> list[tuple[str, str, str]]:
    """(lease file, containerID, ifname) of host-local's leases of `network` on this node."""
    directory = os.path.join(str(ipam_conf.get("dataDir") or HOST_LOCAL_DEFAULT_DIR), network)
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    leases = []
    for name in names:
        if name == "lock" or name.startswith("last_reserved_ip"):
            continue
        path = os.path.join(directory, name)
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = f.read().replace("\r\n", "\n").split("\n")
        except (IsADirectoryError, FileNotFoundError):
            continue
        leases.append((path, lines[0].strip(), lines[1].strip() if len(lines) > 1 else ""))
    return leases


def cmd_gc(conf: NetConf, call: Call, log: CallLog) -> None:
    """Removes every attachment of this network not listed; keeps going past failures."""
    valid = _valid_attachments(conf.raw)
    me = _this_node(conf)
    ipam = Ipam(_ipam_conf(conf, me), call.env)
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
        for path, container_id, ifname in host_local_leases(ipam.conf, conf.name):
            if not ifname:  # pre-1.0 host-local wrote no ifname: IPAM DEL can't name it
                if container_id not in valid_ids:
                    try:
                        os.remove(path)
                    except OSError as e:
                        if e.errno != errno.ENOENT:
                            failures.append(f"removing lease {path}: {e.strerror}")
                continue
            if (container_id, ifname) not in valid:
                stale.add((container_id, ifname))

    for container_id, ifname in sorted(stale):
        try:
            ipam.delete(conf.raw, conf.cni_version, container_id, ifname)
            log.info(f"GC: released the IPAM lease of {container_id}/{ifname}")
        except CniError as e:
            failures.append(f"releasing {container_id}/{ifname}: {e.msg} {e.details}".strip())

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
