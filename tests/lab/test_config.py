"""lab.toml validation: every mistake names its dotted key and says how to fix it."""
from __future__ import annotations

import ipaddress
import textwrap
from pathlib import Path

import pytest

from lab.api import LabError
from lab.config import load_config, parse_config

GOOD = """
[lab]
name = "demo"

[[nodes]]
name = "node1"
role = "server"

[[nodes]]
name = "node2"

[network]
underlay = "10.99.0.0/24"
pod_cidr = "10.244.0.0/16"

[plugin]
path = "dist/cnilab"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lab.toml"
    path.write_text(textwrap.dedent(text))
    return path


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(LabError) as info:
        load_config(write(tmp_path, text))
    return info.value.describe()


def test_good_config_has_defaults_and_derived_facts(tmp_path):
    config = load_config(write(tmp_path, GOOD))
    assert config.name == "demo"
    assert config.lab.provider == "netns"
    assert config.plugin.plugin_type == "cnilab"       # the file name
    assert config.plugin.backend is None           # ours defaults to host-gw when rendered
    assert config.plugin.ifname == "eth0"
    assert config.k3s is None
    assert config.pod_subnets() == {"node1": ipaddress.IPv4Network("10.244.0.0/24"),
                                    "node2": ipaddress.IPv4Network("10.244.1.0/24")}
    assert config.underlay_addresses() == {"node1": ipaddress.IPv4Address("10.99.0.11"),
                                           "node2": ipaddress.IPv4Address("10.99.0.12")}
    assert config.harness_dir == Path("~/.local/state/cnilab/demo").expanduser()
    assert config.source == (tmp_path / "lab.toml").absolute()


def test_name_override(tmp_path):
    config = load_config(write(tmp_path, GOOD), name="other")
    assert config.name == "other"
    assert config.harness_dir.name == "other"


def test_plugin_path_relative_to_config_dir_when_not_in_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir("/")
    config = load_config(write(tmp_path, GOOD))
    assert config.plugin_path == tmp_path / "dist" / "cnilab"


def test_unknown_key_names_dotted_key_and_suggests(tmp_path):
    msg = error_of(tmp_path, GOOD.replace('pod_cidr = "10', 'podcidr = "10'))
    assert "network.podcidr: unknown key" in msg
    assert "did you mean 'pod_cidr'?" in msg


def test_unknown_key_in_node_entry(tmp_path):
    msg = error_of(tmp_path, GOOD.replace('role = "server"', 'rolle = "server"'))
    assert "nodes[0].rolle: unknown key" in msg
    assert "'role'" in msg


def test_unknown_section(tmp_path):
    msg = error_of(tmp_path, GOOD + "\n[cluster]\nx = 1\n")
    assert "cluster: unknown key" in msg


def test_bad_cidr(tmp_path):
    msg = error_of(tmp_path, GOOD.replace("10.99.0.0/24", "10.99.0.0/33"))
    assert "network.underlay:" in msg and "10.99.0.0/33" in msg
    assert "write it like" in msg


def test_cidr_with_host_bits(tmp_path):
    msg = error_of(tmp_path, GOOD.replace("10.244.0.0/16", "10.244.0.1/16"))
    assert "network.pod_cidr:" in msg


def test_duplicate_node(tmp_path):
    msg = error_of(tmp_path, GOOD.replace('name = "node2"', 'name = "node1"'))
    assert "nodes: node name 'node1' appears twice" in msg
    assert "its own name" in msg


def test_missing_plugin_path(tmp_path):
    msg = error_of(tmp_path, GOOD.replace('path = "dist/cnilab"', 'type = "ptp"'))
    assert "plugin.path: missing (required)" in msg
    assert "dist/cnilab" in msg          # the fix names an example value


def test_missing_plugin_section(tmp_path):
    msg = error_of(tmp_path, GOOD.split("[plugin]")[0])
    assert "plugin: missing (required)" in msg


def test_bad_provider_lists_choices(tmp_path):
    msg = error_of(tmp_path, GOOD.replace('name = "demo"', 'name = "demo"\nprovider = "docker"'))
    assert "lab.provider:" in msg and "'netns'" in msg


def test_bad_backend(tmp_path):
    msg = error_of(tmp_path, GOOD + 'backend = "geneve"\n')
    assert "plugin.backend:" in msg and "'vxlan'" in msg


@pytest.mark.parametrize("name", ["my-lab", "Demo", "x" * 21, ""])
def test_bad_lab_name(tmp_path, name):
    msg = error_of(tmp_path, GOOD.replace('name = "demo"', f'name = "{name}"'))
    assert "lab.name:" in msg


@pytest.mark.parametrize("name", ["sw", "pod-a", "Node1", "-x"])
def test_reserved_or_bad_node_name(tmp_path, name):
    msg = error_of(tmp_path, GOOD.replace('name = "node2"', f'name = "{name}"'))
    assert "nodes[1].name:" in msg


def test_pod_cidr_too_small_for_nodes(tmp_path):
    msg = error_of(tmp_path, GOOD.replace("10.244.0.0/16", "10.244.0.0/24").replace(
        '[[nodes]]\nname = "node2"', '[[nodes]]\nname = "node2"\n[[nodes]]\nname = "node3"'))
    assert "network.pod_cidr:" in msg and "3 nodes" in msg


def test_pod_cidr_narrower_than_a_24(tmp_path):
    msg = error_of(tmp_path, GOOD.replace("10.244.0.0/16", "10.244.0.0/25"))
    assert "network.pod_cidr:" in msg and "/24" in msg


def test_underlay_too_small(tmp_path):
    msg = error_of(tmp_path, GOOD.replace("10.99.0.0/24", "10.99.0.0/29"))
    assert "network.underlay:" in msg and "too small" in msg


def test_overlapping_ranges(tmp_path):
    msg = error_of(tmp_path, GOOD.replace("10.99.0.0/24", "10.244.5.0/24"))
    assert "overlaps network.underlay" in msg


def test_no_nodes(tmp_path):
    without_nodes = GOOD.replace('[[nodes]]\nname = "node2"\n', "").replace(
        '[[nodes]]\nname = "node1"\nrole = "server"\n', "")
    msg = error_of(tmp_path, "nodes = []\n" + without_nodes)
    assert "nodes: at least one" in msg


def test_missing_file_says_where_and_how(tmp_path):
    with pytest.raises(LabError) as info:
        load_config(tmp_path / "nope.toml")
    msg = info.value.describe()
    assert str(tmp_path / "nope.toml") in msg
    assert "cp examples/netns-hostgw.toml lab.toml" in msg


def test_invalid_toml(tmp_path):
    msg = error_of(tmp_path, GOOD + "\n[plugin\n")
    assert "is not valid TOML" in msg


def test_plugin_config_table_kept_verbatim(tmp_path):
    config = load_config(write(tmp_path, GOOD + '[plugin.config]\nmtu = 1400\n'
                                                '[plugin.config.ipam]\ntype = "host-local"\n'))
    assert config.plugin.config == {"mtu": 1400, "ipam": {"type": "host-local"}}


def test_sections_of_other_providers_are_validated(tmp_path):
    msg = error_of(tmp_path, GOOD + "\n[k3s]\nno_such_k3s_key = 1\n")
    assert "k3s.no_such_k3s_key: unknown key" in msg


def test_bad_name_override():
    data = {"nodes": [{"name": "a"}], "plugin": {"path": "/bin/true"}}
    with pytest.raises(LabError) as info:
        parse_config(data, name="bad-name")
    assert "--name: 'bad-name' is not a lab name" in info.value.describe()


@pytest.mark.parametrize("example", sorted(Path(__file__).parents[2].glob("examples/*.toml")))
def test_examples_load(example):
    config = load_config(example)
    # netns examples show a 3-node mesh; VM examples stay at 2 (TCG boots are slow) but for
    # the K3s ones that show a 3-node cluster (the connected one, the primary-mode one);
    # container nodes are cheap: 3
    three = ("netns-", "podman", "k3s-podman", "k3s-libvirt.toml", "k3s-libvirt-primary.toml",
             "k3s-libvirt-dualstack.toml", "k3s-existing")
    expected = 3 if example.name.startswith(three) else 2
    assert len(config.nodes) == expected, example.name
    assert config.plugin_path.name in ("cnilab", "ptp", "go-ptp")
    # a plugin the example builds itself is named by its build (examples/go-plugin)
    assert (config.plugin.build is not None) == (config.plugin_path.name == "go-ptp")


def _libvirt_k3s(**libvirt):
    from lab.config import parse_config

    return parse_config({"lab": {"name": "kube", "provider": "libvirt"},
                         "nodes": [{"name": "n1"}], "plugin": {"path": "/bin/true"},
                         "libvirt": libvirt, "k3s": {"mode": "airgap",
                                                     "version": "v1.21.2+k3s1"}})


def test_k3s_nodes_are_sized_for_k3s_and_too_small_is_refused():
    from lab.api import LabError

    sized = _libvirt_k3s()
    assert sized.libvirt is not None
    assert (sized.libvirt.vcpus, sized.libvirt.memory_mib, sized.libvirt.disk_gib) == (
        2, 2048, 10)
    bigger = _libvirt_k3s(vcpus=4, memory_mib=4096)
    assert bigger.libvirt is not None
    assert (bigger.libvirt.vcpus, bigger.libvirt.memory_mib) == (4, 4096)
    with pytest.raises(LabError) as e:
        _libvirt_k3s(vcpus=1)
    assert "libvirt.vcpus = 1 (K3s needs at least 2)" in e.value.describe()
    assert "crash-loops" in e.value.describe()


def test_our_plugin_is_known_by_its_build_mark_whatever_its_type(tmp_path):
    """Installed under another type, our plugin used to lose its node list and MTU."""
    from lab.runtime.network import base_config

    ours = tmp_path / "renamed"
    ours.write_bytes(b"#!/bin/sh\n# cnilab build 0123abcd sha256 ff\nexit 0\n")
    theirs = tmp_path / "theirs"
    theirs.write_bytes(b"#!/bin/sh\nexit 0\n")
    data = {"nodes": [{"name": "a"}], "plugin": {"path": str(ours), "type": "mycni"}}
    config = parse_config(data)
    assert config.plugin_is_cnilab
    assert base_config(config)["backend"] == "host-gw"
    other = parse_config({**data, "plugin": {"path": str(theirs), "type": "mycni"}})
    assert not other.plugin_is_cnilab and "backend" not in base_config(other)
    with pytest.raises(LabError, match=r"plugin\.backend is a setting of cnilab, not of mycni"):
        parse_config({**data, "plugin": {"path": str(theirs), "type": "mycni",
                                         "backend": "vxlan"}})


@pytest.mark.parametrize("network, error", [
    ({"underlay": ["10.99.0.0/24", "10.98.0.0/24"]}, "both IPv4: give at most one network"),
    ({"pod_cidr": ["fd00:244::/56", "fd00:245::/56"]}, "both IPv6"),
    ({"pod_cidr": "fd00:244::/80"}, "smaller than one /64"),
    ({"pod_cidr": ["10.244.0.0/16", "fd00:244::/56"]}, "IPv6 pods over host-gw need an IPv6"),
    ({"underlay": "fd00:99::/64", "pod_cidr": "fd00:99::/56"}, "overlaps network.underlay"),
    ({"underlay": "10.99.0.0/24 "}, "is not a network in CIDR form"),
])
def test_mixed_family_nonsense_is_refused_with_the_fix(network, error):
    data = {"nodes": [{"name": "a"}, {"name": "b"}],
            "plugin": {"path": "/bin/true", "type": "cnilab"}, "network": network}
    with pytest.raises(LabError) as e:
        parse_config(data)
    assert error in e.value.describe(), e.value.describe()


def test_dual_stack_and_v6_only_labs_split_both_families():
    dual = parse_config({"nodes": [{"name": "a"}, {"name": "b"}],
                         "plugin": {"path": "/bin/true"},
                         "network": {"underlay": ["10.99.0.0/24", "fd00:99::/64"],
                                     "pod_cidr": ["10.244.0.0/16", "fd00:244::/56"]}})
    assert dual.network.families == (4, 6)
    by = dual.pod_subnets_by_family()
    assert (str(by[4]["b"]), str(by[6]["b"])) == ("10.244.1.0/24", "fd00:244:0:1::/64")
    addresses = dual.underlay_addresses_by_family()
    assert (str(addresses[4]["a"]), str(addresses[6]["a"])) == ("10.99.0.11", "fd00:99::11")
    v6 = parse_config({"nodes": [{"name": "a"}], "plugin": {"path": "/bin/true"},
                       "network": {"underlay": "fd00:99::/64", "pod_cidr": "fd00:244::/56"}})
    assert v6.network.families == (6,) and str(v6.underlay_addresses()["a"]) == "fd00:99::11"


V4_PLUGIN = GOOD.replace('path = "dist/cnilab"', 'path = "/usr/lib/cni/ptp"')


@pytest.mark.parametrize(("extra", "said"), [
    ('[plugin.config.ipam]\ntype = "host-local"\nsubnet = "${NODE_POD_SUBNT}"\n',
     "plugin.config.ipam.subnet: unknown placeholder ${NODE_POD_SUBNT}; did you mean "
     "${NODE_POD_SUBNET}? known: ${NODE_NAME}, ${NODE_IP}"),
    ('[plugin.config.ipam]\ntype = "host-local"\nsubnet = "${NODE_POD_SUBNET6}"\n',
     "plugin.config.ipam.subnet: ${NODE_POD_SUBNET6} is an IPv6 value but network.pod_cidr "
     "has no IPv6 network; add one there or use ${NODE_POD_SUBNET}"),
    ('[plugin.config]\nmtu = "1500"\n',
     "plugin.config.mtu: must be an integer, got '1500'; write mtu = 1500 (no quotes)"),
    ('[plugin.config]\nname = "my net"\n',
     "plugin.config.name: 'my net' is not a CNI network name"),
    ('[plugin.config]\nplugins = [{type = "ptp", mtu = "9000"}]\n',
     "plugin.config.plugins[0].mtu: must be an integer, got '9000'"),
])
def test_plugin_config_mistakes_are_caught_when_the_config_is_read(tmp_path, extra, said):
    """Before: found by the first ADD, after the lab was made."""
    assert said in error_of(tmp_path, V4_PLUGIN + extra)


def test_an_interface_name_the_kernel_refuses_is_caught_when_read(tmp_path):
    text = V4_PLUGIN.replace('[plugin]\n', '[plugin]\nifname = "averylonginterface0"\n')
    assert ("plugin.ifname: 'averylonginterface0' is longer than 15 bytes (the kernel's limit)"
            in error_of(tmp_path, text))


def test_the_known_placeholders_of_the_labs_families_pass(tmp_path):
    text = V4_PLUGIN + ('[plugin.config.ipam]\ntype = "host-local"\n'
                        'subnet = "${NODE_POD_SUBNET4}"\nnodes = "${PEERS}"\n')
    assert load_config(write(tmp_path, text)).plugin.config["ipam"]["subnet"] == \
        "${NODE_POD_SUBNET4}"


@pytest.mark.parametrize(("network", "said"), [
    ('underlay = 5', "network.underlay: must be a string or a list of strings, got 5"),
    ('pod_cidr = ["10.244.0.0/16", 3]', "network.pod_cidr[1]: must be a string, got 3"),
])
def test_type_errors_are_one_line_without_validator_branches(tmp_path, network, said):
    text = GOOD.replace('underlay = "10.99.0.0/24"\npod_cidr = "10.244.0.0/16"', network)
    err = error_of(tmp_path, text)
    assert said in err
    assert ".str:" not in err and "list[str]" not in err and len(err.splitlines()) == 3
