"""`lab pod add`'s runtime arguments as libcni takes them: --cni-args becomes CNI_ARGS pairs,
--port / --mac / --ip / --bandwidth become capability arguments (the names and shapes
containerd passes: portMappings, mac, ips, bandwidth), each a plugin sees only when its config
declares the capability. Pure parsing: every mistake is one LabError naming the fix."""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from typing import Any

from lab.api import AttachOptions, LabError
from lab.config.plugin_config import ifname_problem

_CNI_ARG = re.compile(r"[A-Za-z0-9_.-]+=[^;=\s]*")
_PORT = re.compile(r"(?:(?P<host_ip>[0-9.]+|\[[0-9a-fA-F:]+\]):)?(?P<host>\d+):(?P<pod>\d+)"
                   r"(?:/(?P<proto>tcp|udp|sctp))?")
_MAC = re.compile(r"[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}")
_RATE = re.compile(r"(?P<n>\d+)(?P<unit>[kKmMgG]?)")
_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}


def cni_args(text: str) -> str:
    """KEY=VALUE pairs joined by ';' (CNI_ARGS), checked as skel parses them."""
    pairs = [p for p in text.split(";") if p]
    bad = [p for p in pairs if not _CNI_ARG.fullmatch(p)]
    if bad or not pairs:
        raise LabError(f"--cni-args: {(bad or [text])[0]!r} is not KEY=VALUE",
                       hint="pairs joined by ';', e.g. --cni-args 'IgnoreUnknown=1;IP=10.244.0.50'")
    return ";".join(pairs)


def port_mapping(text: str) -> dict[str, Any]:
    """HOST:POD[/PROTO] (or HOSTIP:HOST:POD/PROTO) as one portMappings entry."""
    m = _PORT.fullmatch(text)
    ports = (int(m["host"]), int(m["pod"])) if m else (0, 0)
    if m is None or not all(0 < p < 65536 for p in ports):
        raise LabError(f"--port: {text!r} is not HOST:POD[/PROTO] with ports 1-65535",
                       hint="e.g. --port 8080:80/tcp (tcp, udp or sctp; tcp when left out)")
    entry: dict[str, Any] = {"hostPort": ports[0], "containerPort": ports[1],
                             "protocol": m["proto"] or "tcp"}
    if m["host_ip"]:
        entry["hostIP"] = m["host_ip"].strip("[]")
    return entry


def mac(text: str) -> str:
    if not _MAC.fullmatch(text) or int(text[:2], 16) & 1:
        raise LabError(f"--mac: {text!r} is not a unicast MAC address",
                       hint="six hex pairs with ':', first byte even, e.g. 02:00:00:00:00:42")
    return text.lower()


def pod_ip(text: str) -> str:
    try:
        ipaddress.ip_address(text.split("/")[0])
        if "/" in text:
            ipaddress.ip_interface(text)
    except ValueError:
        raise LabError(f"--ip: {text!r} is not an IP address",
                       hint="an address of the node's pod subnet, e.g. --ip 10.244.0.50") from None
    return text


def rate(text: str, what: str) -> int:
    m = _RATE.fullmatch(text)
    if m is None or int(m["n"]) == 0:
        raise LabError(f"--bandwidth: {what}={text!r} is not a rate",
                       hint="bits per second with an optional k, M or G, e.g. in=10M,out=5M")
    return int(m["n"]) * _UNITS[m["unit"].lower()]


def bandwidth(text: str) -> dict[str, int]:
    """in=RATE,out=RATE (either may be left out) as the bandwidth capability: rates in bit/s,
    each with a burst of one second's worth (the plugin shapes only when both are set)."""
    entry: dict[str, int] = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        direction = {"in": "ingress", "out": "egress"}.get(key.strip())
        if direction is None or not value:
            raise LabError(f"--bandwidth: {part!r} is not in=RATE or out=RATE",
                           hint="e.g. --bandwidth in=10M,out=5M (bits per second)")
        bits = rate(value.strip(), key.strip())
        entry[f"{direction}Rate"], entry[f"{direction}Burst"] = bits, bits
    return entry


def interface_name(text: str) -> str:
    problem = ifname_problem(text)
    if problem:
        raise LabError(f"--ifname: {text!r} {problem}", hint="e.g. --ifname net2")
    return text


def attach_options(*, cni_args_text: str | None = None, ports: Sequence[str] = (),
                   mac_text: str | None = None, ips: Sequence[str] = (),
                   bandwidth_text: str | None = None, ifname: str | None = None
                   ) -> AttachOptions:
    """The options of `lab pod add` as what the runtime passes with the attachment."""
    capabilities: dict[str, Any] = {}
    if ports:
        capabilities["portMappings"] = [port_mapping(p) for p in ports]
    if mac_text is not None:
        capabilities["mac"] = mac(mac_text)
    if ips:
        capabilities["ips"] = [pod_ip(ip) for ip in ips]
    if bandwidth_text is not None:
        capabilities["bandwidth"] = bandwidth(bandwidth_text)
    return AttachOptions(cni_args=cni_args(cni_args_text) if cni_args_text is not None else "",
                         capability_args=capabilities,
                         ifname=interface_name(ifname) if ifname is not None else "")
