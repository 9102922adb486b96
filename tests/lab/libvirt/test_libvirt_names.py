from __future__ import annotations

import re
from ipaddress import IPv4Network

import pytest

from lab.api import LabError
from lab.nodes.providers.libvirt import names


def test_resource_names_carry_the_lab():
    assert names.domain_name("demo", "n1") == "cnilab-demo-n1"
    assert names.network_name("demo") == names.pool_name("demo") == "cnilab-demo"


def test_bridge_name_fits_linux_limit_and_differs_per_lab():
    a, b = names.bridge_name("a" * 40), names.bridge_name("a" * 39 + "b")
    assert len(a) <= 15 and len(b) <= 15 and a != b


def test_mac_is_stable_local_qemu_range_and_per_node():
    mac = names.mac_address("demo", "n1")
    assert re.fullmatch(r"52:54:00(:[0-9a-f]{2}){3}", mac)
    assert mac == names.mac_address("demo", "n1")
    assert mac != names.mac_address("demo", "n2") != names.mac_address("other", "n1")


def test_dhcp_range_stays_above_the_reservations():
    start, end = names.dhcp_range(IPv4Network("10.99.0.0/24"))
    assert str(start) == "10.99.0.128" and str(end) == "10.99.0.254"
    assert str(names.host_address(IPv4Network("10.99.0.0/24"))) == "10.99.0.1"


@pytest.mark.parametrize("bad", ["", "Demo", "-x", "a b", "x" * 41])
def test_bad_lab_names_are_refused(bad):
    with pytest.raises(LabError):
        names.check_lab_name(bad)


def test_bad_node_names_are_refused():
    with pytest.raises(LabError, match="hostname"):
        names.check_node_name("n_1")
