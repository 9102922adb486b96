"""LibvirtProvider against libvirt's test:///default driver: every decision the provider makes
(what to create, what it finds, what it removes) without booting anything."""
from __future__ import annotations

import json
import secrets
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest

from lab.api import LabError
from lab.config import parse_config
from lab.nodes.keys import host_keys
from lab.nodes.providers import make_provider
from lab.nodes.providers.libvirt import names, xml
from lab.nodes.providers.libvirt.provider import LibvirtProvider
from lab.nodes.providers.libvirt.seed import read_seed_iso
from lab.nodes.ssh import SshNode

URI = "test:///default"


@pytest.fixture
def test_conn():
    libvirt.registerErrorHandler(lambda _c, _e: None, None)
    conn = libvirt.open(URI)   # the test driver's state is shared by all connections in-process
    yield conn
    conn.close()


def _config(tmp_path: Path, lab: str, nodes=("n1", "n2"), underlay="192.168.240.0/24",
            **libvirt_settings):
    base = tmp_path / "base.qcow2"
    if not base.exists():
        tmp_path.mkdir(parents=True, exist_ok=True)
        base.write_bytes(b"QFI\xfb" + bytes(20) + (2 << 30).to_bytes(8, "big") + bytes(64))
    settings = {"uri": URI, "image": str(base), "pool_dir": str(tmp_path / "pools"),
                "console_log_dir": str(tmp_path / "logs"), "image_cache": str(tmp_path / "c"),
                **libvirt_settings}
    return parse_config({
        "lab": {"name": lab, "provider": "libvirt", "state_dir": str(tmp_path / "state")},
        "nodes": [{"name": n} for n in nodes],
        "network": {"underlay": underlay},
        "plugin": {"path": "/bin/true"},
        "libvirt": settings,
    })


@pytest.fixture
def lab_name(test_conn):
    name = "t5" + secrets.token_hex(4)
    yield name
    # whatever a failing test left behind in the shared test driver
    for dom in test_conn.listAllDomains(0):
        if dom.name().startswith(f"cnilab-{name}"):
            if dom.isActive():
                dom.destroy()
            dom.undefine()


@pytest.fixture
def provider(tmp_path, lab_name):
    p = LibvirtProvider(_config(tmp_path, lab_name), report=lambda _m: None)
    yield p
    p.destroy()
    p.close()


def _lab_domains(conn, lab):
    return sorted(d.name() for d in conn.listAllDomains(0)
                  if (t := xml.read_tag(d.XMLDesc(0))) and t.lab == lab)


def test_make_provider_picks_libvirt(tmp_path, lab_name):
    assert isinstance(make_provider(_config(tmp_path, lab_name)), LibvirtProvider)


def test_provision_creates_tagged_vms_network_and_volumes(provider, test_conn, lab_name,
                                                         tmp_path):
    nodes = provider.provision()
    assert [n.name for n in nodes] == ["n1", "n2"]
    assert [n.address for n in nodes] == ["192.168.240.11", "192.168.240.12"]
    assert all(isinstance(n, SshNode) and n.state_dir == "/var/lib/cnilab" for n in nodes)
    assert nodes[0].testinfra_url.startswith("paramiko://cnilab@192.168.240.11:22?ssh_config=")

    assert _lab_domains(test_conn, lab_name) == [f"cnilab-{lab_name}-n1", f"cnilab-{lab_name}-n2"]
    dom = test_conn.lookupByName(f"cnilab-{lab_name}-n1")
    assert dom.isActive()
    assert xml.read_tag(dom.XMLDesc(0)) == xml.LabTag(lab_name, "node", "n1")

    net = test_conn.networkLookupByName(f"cnilab-{lab_name}")
    assert net.isActive()
    hosts = {h.get("name"): (h.get("mac"), h.get("ip"))
             for h in ET.fromstring(net.XMLDesc(0)).iterfind("ip/dhcp/host")}
    assert hosts["n2"] == (names.mac_address(lab_name, "n2"), "192.168.240.12")
    mac = ET.fromstring(dom.XMLDesc(0)).find("devices/interface/mac").get("address")
    assert mac == hosts["n1"][0]      # the reservation matches the VM's NIC

    pool = test_conn.storagePoolLookupByName(f"cnilab-{lab_name}")
    assert sorted(pool.listVolumes()) == ["n1-seed.iso", "n1.qcow2", "n2-seed.iso", "n2.qcow2"]
    overlay = ET.fromstring(pool.storageVolLookupByName("n1.qcow2").XMLDesc(0))
    assert overlay.findtext("backingStore/path") == str(tmp_path / "base.qcow2")
    assert int(overlay.findtext("capacity")) == 4 << 30     # disk_gib, larger than the base


def test_seed_carries_the_host_key_the_harness_pins(provider, test_conn, lab_name, tmp_path):
    nodes = provider.provision()
    seed_path = test_conn.storagePoolLookupByName(f"cnilab-{lab_name}") \
        .storageVolLookupByName("n2-seed.iso").path()
    label, files = read_seed_iso(Path(seed_path).read_bytes())
    assert label == "cidata"
    config = json.loads(files["user-data"].decode().split("\n", 1)[1])
    keys = host_keys(tmp_path / "state", "n2")
    assert config["ssh_keys"]["ed25519_public"] == keys.public_line
    assert config["hostname"] == "n2"
    # the node object pins exactly that key
    assert nodes[1].host_key.public_line == keys.public_line
    client_pub = (tmp_path / "state" / "ssh" / "id_ed25519.pub").read_text().strip()
    assert config["users"][0]["ssh_authorized_keys"] == [client_pub]


def test_nodes_and_status_come_from_libvirt_alone(provider, tmp_path, lab_name):
    provider.provision()
    fresh = LibvirtProvider(_config(tmp_path, lab_name), report=lambda _m: None)
    assert [(n.name, n.address) for n in fresh.nodes()] == [
        ("n1", "192.168.240.11"), ("n2", "192.168.240.12")]
    status = {s.name: s for s in fresh.status()}
    assert status["n1"].state == "running"
    assert status["n1"].details["domain"] == f"cnilab-{lab_name}-n1"
    fresh.conn().lookupByName(f"cnilab-{lab_name}-n2").destroy()
    assert {s.name: s.state for s in fresh.status()}["n2"] == "stopped"
    fresh.close()


def test_provision_again_creates_nothing_new_and_restarts_stopped_vms(provider, test_conn,
                                                                    lab_name):
    provider.provision()
    uuid = test_conn.lookupByName(f"cnilab-{lab_name}-n1").UUIDString()
    test_conn.lookupByName(f"cnilab-{lab_name}-n1").destroy()
    provider.provision()
    dom = test_conn.lookupByName(f"cnilab-{lab_name}-n1")
    assert dom.UUIDString() == uuid and dom.isActive()
    assert len(_lab_domains(test_conn, lab_name)) == 2


def test_destroy_removes_everything_and_only_this_lab(provider, test_conn, tmp_path, lab_name):
    other = LibvirtProvider(_config(tmp_path / "o", lab_name + "x", nodes=("n1",),
                                    underlay="192.168.241.0/24"), report=lambda _m: None)
    other_net = f"cnilab-{lab_name}x"
    try:
        other.provision()
        provider.provision()
        (tmp_path / "logs").mkdir(exist_ok=True)
        provider.console_log("n1").write_text("boot noise\n")
        provider.destroy()
        assert _lab_domains(test_conn, lab_name) == []
        assert f"cnilab-{lab_name}" not in test_conn.listNetworks() + \
            test_conn.listDefinedNetworks()
        assert f"cnilab-{lab_name}" not in test_conn.listStoragePools() + \
            test_conn.listDefinedStoragePools()
        assert not provider.console_log("n1").exists()
        assert not provider.pool_path.exists()
        assert provider.nodes() == []
        assert {s.state for s in provider.status()} == {"missing"}
        # the other lab is untouched
        assert _lab_domains(test_conn, lab_name + "x") == [f"cnilab-{lab_name}x-n1"]
        assert other_net in test_conn.listNetworks()
        provider.destroy()     # again: nothing to do, no error
    finally:
        other.destroy()
        other.close()
    assert other_net not in test_conn.listNetworks() + test_conn.listDefinedNetworks()


def test_destroy_after_a_partial_provision(provider, test_conn, lab_name):
    provider._ensure_network()
    pool = provider._ensure_pool()
    pool.createXML(xml.raw_volume_xml("n1-seed.iso", 2048), 0)
    provider.destroy()
    assert f"cnilab-{lab_name}" not in test_conn.listDefinedNetworks() + \
        test_conn.listNetworks()
    assert f"cnilab-{lab_name}" not in test_conn.listStoragePools() + \
        test_conn.listDefinedStoragePools()


def test_a_foreign_domain_with_our_name_is_not_taken_over(provider, test_conn, lab_name):
    test_conn.defineXML(f"<domain type='test'><name>cnilab-{lab_name}-n1</name>"
                        "<memory>65536</memory><os><type>hvm</type></os></domain>")
    with pytest.raises(LabError, match="not made by this lab"):
        provider.provision()
    provider.destroy()
    # destroy leaves the foreign domain alone: it carries no tag of this lab
    assert test_conn.lookupByName(f"cnilab-{lab_name}-n1") is not None


def test_bad_uri_is_a_clear_error(tmp_path, lab_name):
    # a driver name libvirt does not know: refused locally, nothing leaves the machine
    p = LibvirtProvider(_config(tmp_path, lab_name, uri="cnilab-nodriver:///x"),
                        report=lambda _m: None)
    with pytest.raises(LabError, match="cannot connect to libvirt") as err:
        p.nodes()
    assert "libvirtd" in err.value.hint


def test_missing_image_is_reported_before_anything_is_made(tmp_path, lab_name, test_conn):
    p = LibvirtProvider(_config(tmp_path, lab_name, image=str(tmp_path / "nope.qcow2")),
                        report=lambda _m: None)
    with pytest.raises(LabError, match="no such file"):
        p.provision()
    assert _lab_domains(test_conn, lab_name) == []
    assert f"cnilab-{lab_name}" not in test_conn.listNetworks()


def test_a_vm_that_stops_while_booting_reports_its_console_tail(provider, test_conn,
                                                               lab_name, tmp_path):
    import time

    nodes = provider.provision()
    provider.settings.console_log_dir.mkdir(parents=True, exist_ok=True)
    provider.console_log("n1").write_text(
        "".join(f"boot line {i}\r\n" for i in range(100)) + "Kernel panic - not syncing\r\n")
    dom = test_conn.lookupByName(f"cnilab-{lab_name}-n1")
    dom.destroy()
    with pytest.raises(LabError, match="stopped while booting") as err:
        provider._wait_one(nodes[0], dom, time.monotonic() + 60)
    assert err.value.output.splitlines()[-1] == "Kernel panic - not syncing"
    assert "boot line 99" in err.value.output and "boot line 10\n" not in err.value.output
    assert str(provider.console_log("n1")) in err.value.hint


def test_console_tail_without_a_log_says_so(provider):
    assert "no console log" in provider.console_tail("n1")


def test_a_node_added_later_gets_its_reservation(tmp_path, lab_name, test_conn):
    small = LibvirtProvider(_config(tmp_path, lab_name, nodes=("n1",)), report=lambda _m: None)
    bigger = LibvirtProvider(_config(tmp_path, lab_name, nodes=("n1", "n2")),
                             report=lambda _m: None)
    try:
        small.provision()
        bigger.provision()
        net = test_conn.networkLookupByName(f"cnilab-{lab_name}")
        hosts = {h.get("name"): h.get("ip")
                 for h in ET.fromstring(net.XMLDesc(0)).iterfind("ip/dhcp/host")}
        assert hosts == {"n1": "192.168.240.11", "n2": "192.168.240.12"}
    finally:
        bigger.destroy()
        small.close()
        bigger.close()


def test_the_k3s_server_vm_gets_four_times_an_agents_cpu_share(tmp_path, lab_name, test_conn):
    """3 TCG VMs on 2 cores starved the API server until every request timed out: under
    contention the server's VM goes first. Labs without K3s keep libvirt's default."""
    plain = LibvirtProvider(_config(tmp_path / "p", lab_name), report=lambda _m: None)
    assert plain._cpu_shares("n1") == 0
    data = {
        "lab": {"name": lab_name, "provider": "libvirt", "state_dir": str(tmp_path / "st")},
        "nodes": [{"name": "n1", "role": "server"}, {"name": "n2"}],
        "network": {"underlay": "192.168.240.0/24"},
        "plugin": {"path": "/bin/true"},
        "libvirt": {"uri": URI, "image": "cnilab-debian-12"},
        "k3s": {"version": "v1.35.0+k3s1"},
    }
    k3s = LibvirtProvider(parse_config(data), report=lambda _m: None)
    assert (k3s._cpu_shares("n1"), k3s._cpu_shares("n2")) == (4096, 0)
    root = ET.fromstring(xml.domain_xml(xml.DomainSpec(
        name="d", tag=xml.LabTag(lab_name, "node", "n1"), memory_mib=512, vcpus=1,
        domain_type="test", disk_pool="p", disk_volume="v", seed_volume="s", network="n",
        mac="52:54:00:00:00:01", console_log="/dev/null", cpu_shares=k3s._cpu_shares("n1"))))
    dom = test_conn.defineXML(ET.tostring(root, encoding="unicode"))
    try:
        assert ET.fromstring(dom.XMLDesc(0)).findtext("cputune/shares") == "4096"
    finally:
        dom.undefine()


def test_a_tcg_lab_tells_the_actions_its_nodes_are_emulated(tmp_path, lab_name):
    from lab.nodes.providers import provider_emulates
    from lab.nodes.providers.libvirt.kvm_probe import AccelChoice

    p = LibvirtProvider(_config(tmp_path, lab_name), report=lambda _m: None)
    assert not provider_emulates(p)                  # nothing chosen before provision()
    p.accel = AccelChoice("tcg", "probe: no KVM")
    assert provider_emulates(p)
    p.accel = AccelChoice("kvm", "probe booted")
    assert not provider_emulates(p)
