"""The XML builders, read as strings and parsed back: what libvirt will be told."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from lab.nodes.providers.libvirt import names, xml


def _domain(**overrides: object) -> xml.DomainSpec:
    base: dict[str, object] = dict(
        name="cnilab-demo-n1", tag=xml.LabTag("demo", "node", "n1"), memory_mib=768, vcpus=2,
        domain_type="qemu", disk_pool="cnilab-demo", disk_volume="n1.qcow2",
        seed_volume="n1-seed.iso", network="cnilab-demo", mac="52:54:00:aa:bb:cc",
        console_log="/var/log/libvirt/qemu/cnilab-demo-n1-console.log")
    base.update(overrides)
    return xml.DomainSpec(**base)  # type: ignore[arg-type]


def test_tcg_domain_uses_qemu_type_and_maximum_cpu():
    root = ET.fromstring(xml.domain_xml(_domain()))
    assert root.get("type") == "qemu"
    assert root.find("cpu").get("mode") == "maximum"
    assert root.findtext("memory") == "768" and root.find("memory").get("unit") == "MiB"
    assert root.findtext("vcpu") == "2"


def test_kvm_domain_passes_the_host_cpu_through():
    root = ET.fromstring(xml.domain_xml(_domain(domain_type="kvm")))
    assert root.get("type") == "kvm"
    assert root.find("cpu").get("mode") == "host-passthrough"


def test_direct_kernel_boot_when_the_image_brings_a_kernel():
    text = xml.domain_xml(_domain(kernel="/c/vmlinuz", initrd="/c/initrd.img",
                                  cmdline="root=/dev/vda rw console=ttyS0"))
    os_el = ET.fromstring(text).find("os")
    assert os_el.findtext("kernel") == "/c/vmlinuz"
    assert os_el.findtext("initrd") == "/c/initrd.img"
    assert os_el.findtext("cmdline") == "root=/dev/vda rw console=ttyS0"
    assert os_el.find("boot") is None


def test_disk_boot_without_kernel():
    os_el = ET.fromstring(xml.domain_xml(_domain())).find("os")
    assert os_el.find("kernel") is None
    assert os_el.find("boot").get("dev") == "hd"


def test_disks_network_and_console_log():
    devices = ET.fromstring(xml.domain_xml(_domain())).find("devices")
    disks = devices.findall("disk")
    assert [(d.find("source").get("volume"), d.find("target").get("dev")) for d in disks] == [
        ("n1.qcow2", "vda"), ("n1-seed.iso", "vdb")]
    assert disks[0].find("driver").get("type") == "qcow2"
    assert disks[1].find("readonly") is not None
    assert all(d.find("source").get("pool") == "cnilab-demo" for d in disks)
    nic = devices.find("interface")
    assert nic.get("type") == "network"
    assert nic.find("source").get("network") == "cnilab-demo"
    assert nic.find("mac").get("address") == "52:54:00:aa:bb:cc"
    log = devices.find("serial/log")
    assert log.get("file") == "/var/log/libvirt/qemu/cnilab-demo-n1-console.log"


def test_metadata_round_trips():
    text = xml.domain_xml(_domain())
    assert f'xmlns:cnilab="{xml.METADATA_NS}"' in text
    assert xml.read_tag(text) == xml.LabTag("demo", "node", "n1")


def test_foreign_xml_has_no_tag():
    assert xml.read_tag("<domain type='kvm'><name>other</name></domain>") is None
    assert xml.read_tag("<domain><metadata><x:lab xmlns:x='urn:other' name='demo' role='node'/>"
                        "</metadata></domain>") is None
    assert xml.read_tag("not xml <") is None


def _network() -> xml.NetworkSpec:
    subnet = IPv4Network("192.168.231.0/24")
    return xml.NetworkSpec(
        name="cnilab-demo", tag=xml.LabTag("demo", "network", ip_forward_before="0"),
        bridge=names.bridge_name("demo"), subnet=subnet,
        host_address=names.host_address(subnet), dhcp_range=names.dhcp_range(subnet),
        reservations=[("n1", "52:54:00:00:00:01", IPv4Address("192.168.231.11")),
                      ("n2", "52:54:00:00:00:02", IPv4Address("192.168.231.12"))])


def test_network_is_nat_with_a_reservation_per_node():
    text = xml.network_xml(_network())
    root = ET.fromstring(text)
    assert root.find("forward").get("mode") == "nat"
    assert root.find("bridge").get("name") == names.bridge_name("demo")
    ip = root.find("ip")
    assert (ip.get("address"), ip.get("netmask")) == ("192.168.231.1", "255.255.255.0")
    hosts = [(h.get("name"), h.get("mac"), h.get("ip")) for h in ip.iterfind("dhcp/host")]
    assert hosts == [("n1", "52:54:00:00:00:01", "192.168.231.11"),
                     ("n2", "52:54:00:00:00:02", "192.168.231.12")]
    dhcp_range = ip.find("dhcp/range")
    assert dhcp_range.get("start") == "192.168.231.128"
    assert xml.read_tag(text) == xml.LabTag("demo", "network", ip_forward_before="0")


def test_an_isolated_network_has_no_forward_element():
    from dataclasses import replace

    root = ET.fromstring(xml.network_xml(replace(_network(), forward="isolated")))
    assert root.find("forward") is None
    assert len(list(root.iterfind("ip/dhcp/host"))) == 2


def test_overlay_volume_is_a_linked_clone_of_the_base():
    root = ET.fromstring(xml.overlay_volume_xml("n1.qcow2", 4 << 30, Path("/c/disk.qcow2")))
    assert root.findtext("capacity") == str(4 << 30)
    assert root.find("target/format").get("type") == "qcow2"
    assert root.findtext("backingStore/path") == "/c/disk.qcow2"
    assert root.find("backingStore/format").get("type") == "qcow2"
    raw = ET.fromstring(xml.overlay_volume_xml("n1.qcow2", 1, Path("/c/d.img"), "raw"))
    assert raw.find("backingStore/format").get("type") == "raw"


def test_seed_volume_and_pool():
    vol = ET.fromstring(xml.raw_volume_xml("n1-seed.iso", 67584))
    assert vol.findtext("capacity") == "67584"
    assert vol.find("target/format").get("type") == "raw"
    pool = ET.fromstring(xml.pool_xml("cnilab-demo", Path("/var/lib/libvirt/images/cnilab-demo")))
    assert pool.get("type") == "dir"
    assert pool.findtext("target/path") == "/var/lib/libvirt/images/cnilab-demo"


def test_a_dual_stack_network_adds_the_v6_subnet_without_dhcp():
    from dataclasses import replace
    from ipaddress import IPv6Network

    root = ET.fromstring(xml.network_xml(replace(_network(),
                                                 subnet6=IPv6Network("fd00:231::/64"))))
    ips = root.findall("ip")
    assert [(i.get("family"), i.get("address")) for i in ips] == [
        (None, "192.168.231.1"), ("ipv6", "fd00:231::1")]
    assert ips[1].get("prefix") == "64" and ips[1].find("dhcp") is None


def test_a_cpu_share_is_written_only_when_asked():
    assert ET.fromstring(xml.domain_xml(_domain())).find("cputune") is None
    root = ET.fromstring(xml.domain_xml(_domain(cpu_shares=4096)))
    assert root.findtext("cputune/shares") == "4096"
