"""network_spec: the CNI config each node gets, rendered from lab.toml and the real nodes."""
from __future__ import annotations

from pathlib import Path

import pytest

from lab.api import LabError
from lab.config import load_config, parse_config
from lab.network import network_spec
from lab.providers.netns import NetnsNode

EXAMPLES = Path(__file__).parents[2] / "examples"


def nodes_for(config, root="/var/lib/cnilab/x"):
    addresses = config.underlay_addresses()
    return [NetnsNode(n.name, str(addresses[n.name]), f"{root}/{n.name}", f"cnilab-x-{n.name}")
            for n in config.nodes]


def test_cnilab_gets_nodes_backend_and_per_node_state():
    config = load_config(EXAMPLES / "netns-hostgw.toml")
    spec = network_spec(config, nodes_for(config))
    assert spec.name == "cnilab" and spec.plugin_type == "cnilab" and spec.ifname == "eth0"
    assert spec.mtu == 1500
    node2 = spec.configs["node2"]
    assert node2["backend"] == "host-gw"
    assert node2["nodes"] == [
        {"name": "node1", "ip": "10.99.0.11", "podSubnet": "10.244.0.0/24"},
        {"name": "node2", "ip": "10.99.0.12", "podSubnet": "10.244.1.0/24"},
        {"name": "node3", "ip": "10.99.0.13", "podSubnet": "10.244.2.0/24"},
    ]
    assert node2["ipam"] == {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}],
                             "dataDir": "/var/lib/cnilab/x/node2/ipam"}
    assert node2["logFile"] == "/var/lib/cnilab/x/node2/cnilab.log"
    assert spec.cni_path_on("node3") == "/var/lib/cnilab/x/node3/bin:/usr/lib/cni"
    assert spec.cni_path == spec.cni_path_on("node1")
    # the config written in lab.toml is not modified by rendering
    assert "nodes" not in config.plugin.config


def test_vxlan_pod_mtu_is_50_smaller():
    config = load_config(EXAMPLES / "netns-vxlan.toml")
    spec = network_spec(config, nodes_for(config))
    assert spec.mtu == 1450
    assert spec.configs["node1"]["backend"] == "vxlan"
    assert spec.configs["node1"]["vxlan"] == {"vni": 4242, "port": 4790}


def test_reference_ptp_gets_each_nodes_subnet():
    config = load_config(EXAMPLES / "netns-ptp.toml")
    spec = network_spec(config, nodes_for(config))
    assert spec.plugin_type == "ptp" and spec.mtu == 1500
    for i, node in enumerate(("node1", "node2", "node3")):
        ipam = spec.configs[node]["ipam"]
        assert ipam["ranges"] == [[{"subnet": f"10.244.{i}.0/24"}]]
        assert ipam["dataDir"] == f"/var/lib/cnilab/x/{node}/ipam"
        assert "nodes" not in spec.configs[node]    # only our plugin takes the node list
        assert "logFile" not in spec.configs[node]


def test_user_values_win():
    data = {"lab": {"name": "u"}, "nodes": [{"name": "a"}],
            "plugin": {"path": "dist/cnilab", "backend": "vxlan",
                       "config": {"name": "mine", "backend": "none", "mtu": 9000,
                                  "ipam": {"type": "host-local", "dataDir": "/srv/leases"},
                                  "nodes": [{"name": "a", "ip": "1.2.3.4",
                                             "podSubnet": "10.9.0.0/24"}]}}}
    config = parse_config(data)
    conf = network_spec(config, nodes_for(config)).configs["a"]
    assert conf["ipam"]["dataDir"] == "/srv/leases"
    assert conf["backend"] == "none" and conf["name"] == "mine"
    assert conf["nodes"][0]["ip"] == "1.2.3.4"
    assert network_spec(config, nodes_for(config)).mtu == 9000


def test_defaults_for_a_bare_cnilab_plugin_section():
    config = parse_config({"lab": {"name": "bare"}, "nodes": [{"name": "a"}],
                           "plugin": {"path": "dist/cnilab"}})
    conf = network_spec(config, nodes_for(config)).configs["a"]
    assert conf["cniVersion"] == "1.1.0" and conf["name"] == "bare" and conf["type"] == "cnilab"
    assert conf["ipam"] == {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}],
                            "dataDir": "/var/lib/cnilab/x/a/ipam"}


def test_vm_nodes_use_opt_cni_bin_and_keep_ipam_default():
    config = parse_config({"lab": {"name": "vm", "provider": "existing"},
                           "nodes": [{"name": "a"}], "plugin": {"path": "dist/cnilab"}})
    spec = network_spec(config, nodes_for(config))
    assert spec.cni_path == "/opt/cni/bin:/usr/lib/cni"
    assert "dataDir" not in spec.configs["a"]["ipam"]


def test_node_not_in_config_is_an_error():
    config = load_config(EXAMPLES / "netns-hostgw.toml")
    stray = NetnsNode("node9", "10.99.0.19", "/tmp/x", "cnilab-x-node9")
    with pytest.raises(LabError, match="node9"):
        network_spec(config, [*nodes_for(config), stray])


def test_no_nodes_says_run_up():
    config = load_config(EXAMPLES / "netns-hostgw.toml")
    with pytest.raises(LabError) as info:
        network_spec(config, [])
    assert "lab up" in info.value.describe()
