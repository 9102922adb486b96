"""libvirt XML for a lab's domains, network, pool and volumes: pure builders, tested as strings.

Domains and networks carry a `<metadata>` element in cnilab's namespace naming the lab and the
resource's role: `lab status` and `lab down` find everything from libvirt itself.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Network
from pathlib import Path

METADATA_NS = "https://cnilab.dev/xmlns/libvirt/1"
METADATA_TAG = "lab"

ET.register_namespace("cnilab", METADATA_NS)


@dataclass(frozen=True)
class LabTag:
    """What the metadata says: which lab made the resource, and what it is for."""

    lab: str
    role: str            # "node" (domain), "network"
    node: str = ""
    # On the network: the host's net.ipv4.ip_forward before libvirt turned it on, so the
    # last `lab down` can put it back without a state file.
    ip_forward_before: str = ""


@dataclass(frozen=True)
class DomainSpec:
    name: str
    tag: LabTag
    memory_mib: int
    vcpus: int
    domain_type: str            # "kvm", "qemu" (TCG), "test" (libvirt's test driver)
    disk_pool: str
    disk_volume: str
    seed_volume: str
    network: str
    mac: str
    console_log: str
    kernel: str = ""            # direct kernel boot when set (images built by `lab image build`)
    initrd: str = ""
    cmdline: str = ""
    cpu_shares: int = 0         # the host's CPU share under contention (cputune); 0: default


@dataclass(frozen=True)
class NetworkSpec:
    name: str
    tag: LabTag
    bridge: str
    subnet: IPv4Network
    host_address: IPv4Address
    dhcp_range: tuple[IPv4Address, IPv4Address]
    reservations: list[tuple[str, str, IPv4Address]] = field(default_factory=list)  # name, mac, ip
    forward: str = "nat"   # "nat": guests reach out through the host; "isolated": host only
    # Dual-stack labs: the v6 underlay, the host's address on it (nodes are addressed
    # statically over SSH: dnsmasq's DHCPv6 keys reservations by DUID, not by MAC)
    subnet6: IPv6Network | None = None


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def _to_string(root: ET.Element) -> str:
    ET.indent(root)
    return ET.tostring(root, encoding="unicode")


def _metadata(parent: ET.Element, tag: LabTag) -> None:
    meta = _sub(parent, "metadata")
    attrs = {"name": tag.lab, "role": tag.role}
    if tag.node:
        attrs["node"] = tag.node
    if tag.ip_forward_before:
        attrs["ip_forward_before"] = tag.ip_forward_before
    ET.SubElement(meta, f"{{{METADATA_NS}}}{METADATA_TAG}", attrs)


def read_tag(xml: str) -> LabTag | None:
    """The cnilab tag of a domain's or network's XML, or None when cnilab did not make it."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    el = root.find(f"metadata/{{{METADATA_NS}}}{METADATA_TAG}")
    if el is None or not el.get("name") or not el.get("role"):
        return None
    return LabTag(lab=el.get("name", ""), role=el.get("role", ""), node=el.get("node", ""),
                  ip_forward_before=el.get("ip_forward_before", ""))


def cpu_mode(domain_type: str) -> str:
    # TCG: "maximum" enables every feature qemu can emulate (qemu -cpu max). KVM: the host's own
    # CPU is fastest. The test driver ignores it.
    return "host-passthrough" if domain_type == "kvm" else "maximum"


def domain_xml(spec: DomainSpec) -> str:
    root = ET.Element("domain", type=spec.domain_type)
    _sub(root, "name", spec.name)
    _metadata(root, spec.tag)
    _sub(root, "memory", str(spec.memory_mib), unit="MiB")
    _sub(root, "vcpu", str(spec.vcpus))
    if spec.cpu_shares:
        _sub(_sub(root, "cputune"), "shares", str(spec.cpu_shares))
    os_el = _sub(root, "os")
    _sub(os_el, "type", "hvm", arch="x86_64")
    if spec.kernel:
        _sub(os_el, "kernel", spec.kernel)
        if spec.initrd:
            _sub(os_el, "initrd", spec.initrd)
        _sub(os_el, "cmdline", spec.cmdline)
    else:
        _sub(os_el, "boot", dev="hd")
    features = _sub(root, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    if spec.domain_type != "test":
        _sub(root, "cpu", mode=cpu_mode(spec.domain_type))
    _sub(root, "clock", offset="utc")
    _sub(root, "on_poweroff", "destroy")
    _sub(root, "on_reboot", "restart")
    _sub(root, "on_crash", "destroy")

    devices = _sub(root, "devices")
    disk = _sub(devices, "disk", type="volume", device="disk")
    _sub(disk, "driver", name="qemu", type="qcow2", discard="unmap")
    _sub(disk, "source", pool=spec.disk_pool, volume=spec.disk_volume)
    _sub(disk, "target", dev="vda", bus="virtio")
    # The seed as a second virtio disk: cloud-init finds it by its "cidata" label, and a
    # virtio disk needs no extra controller driver in the guest (a CD-ROM would need AHCI).
    seed = _sub(devices, "disk", type="volume", device="disk")
    _sub(seed, "driver", name="qemu", type="raw")
    _sub(seed, "source", pool=spec.disk_pool, volume=spec.seed_volume)
    _sub(seed, "target", dev="vdb", bus="virtio")
    _sub(seed, "readonly")

    nic = _sub(devices, "interface", type="network")
    _sub(nic, "mac", address=spec.mac)
    _sub(nic, "source", network=spec.network)
    _sub(nic, "model", type="virtio")

    # The serial console goes to a file too: when a node never answers SSH, its tail says why.
    serial = _sub(devices, "serial", type="pty")
    _sub(serial, "log", file=spec.console_log, append="off")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")
    if spec.domain_type != "test":
        rng = _sub(devices, "rng", model="virtio")   # sshd and cloud-init wait on entropy
        _sub(rng, "backend", "/dev/urandom", model="random")
    _sub(devices, "memballoon", model="none")
    return _to_string(root)


def network_xml(spec: NetworkSpec) -> str:
    root = ET.Element("network")
    _sub(root, "name", spec.name)
    _metadata(root, spec.tag)
    if spec.forward == "nat":   # no <forward> element is libvirt's isolated network
        _sub(root, "forward", mode="nat")
    _sub(root, "bridge", name=spec.bridge, stp="off", delay="0")
    ip = _sub(root, "ip", address=str(spec.host_address), netmask=str(spec.subnet.netmask))
    dhcp = _sub(ip, "dhcp")
    _sub(dhcp, "range", start=str(spec.dhcp_range[0]), end=str(spec.dhcp_range[1]))
    for name, mac, address in spec.reservations:
        _sub(dhcp, "host", mac=mac, name=name, ip=str(address))
    if spec.subnet6 is not None:
        _sub(root, "ip", family="ipv6", address=str(spec.subnet6.network_address + 1),
             prefix=str(spec.subnet6.prefixlen))
    return _to_string(root)


def pool_xml(name: str, path: Path) -> str:
    root = ET.Element("pool", type="dir")
    _sub(root, "name", name)
    target = _sub(root, "target")
    _sub(target, "path", str(path))
    perms = _sub(target, "permissions")
    _sub(perms, "mode", "0755")
    return _to_string(root)


def overlay_volume_xml(name: str, capacity_bytes: int, backing: Path,
                       backing_format: str = "qcow2") -> str:
    """A qcow2 linked clone: only the node's own writes land in it."""
    root = ET.Element("volume", type="file")
    _sub(root, "name", name)
    _sub(root, "capacity", str(capacity_bytes), unit="bytes")
    target = _sub(root, "target")
    _sub(target, "format", type="qcow2")
    backing_el = _sub(root, "backingStore")
    _sub(backing_el, "path", str(backing))
    _sub(backing_el, "format", type=backing_format)
    return _to_string(root)


def raw_volume_xml(name: str, size_bytes: int) -> str:
    root = ET.Element("volume", type="file")
    _sub(root, "name", name)
    _sub(root, "capacity", str(size_bytes), unit="bytes")
    _sub(root, "allocation", str(size_bytes), unit="bytes")
    target = _sub(root, "target")
    _sub(target, "format", type="raw")
    return _to_string(root)
