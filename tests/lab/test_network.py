"""network_spec: the CNI config each node gets, rendered from lab.toml and the real nodes."""
from __future__ import annotations

from pathlib import Path

import pytest

from lab.api import LabError
from lab.config import load_config, parse_config
from lab.nodes.providers.netns import NetnsNode
from lab.runtime.network import base_config, network_spec

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


def _k3s_config(**sections):
    data = {"lab": {"name": "kube", "provider": "existing"},
            "nodes": [{"name": "node1"}, {"name": "node2"}],
            "plugin": {"path": "/bin/true", "type": "cnilab", "backend": "vxlan"},
            "k3s": {"version": "v1.21.2+k3s1", "mode": "airgap"}, **sections}
    return parse_config(data)


def test_a_secondary_network_routes_the_pod_cidr_at_a_version_multus_accepts():
    """Beside eth0's default route, net1 must not take 0.0.0.0/0 (EEXIST on every ADD), and
    Multus v4.0.x hands delegates CNI 1.0.0 at most."""
    config = _k3s_config(multus={"version": "v4.0.2", "mode": "host"})
    raw = base_config(config)
    assert raw["cniVersion"] == "1.0.0"
    assert raw["ipam"]["routes"] == [{"dst": "10.244.0.0/16"}]
    newer = _k3s_config(multus={"version": "v4.2.4"})
    assert base_config(newer)["cniVersion"] == "1.1.0"


def test_the_primary_network_gets_the_default_route_at_the_runtimes_version():
    config = _k3s_config(k3s={"version": "v1.21.2+k3s1", "mode": "airgap", "primary": True})
    raw = base_config(config)
    assert raw["cniVersion"] == "0.4.0"                # containerd 1.4/1.5: libcni 0.8
    assert raw["ipam"]["routes"] == [{"dst": "0.0.0.0/0"}]
    assert base_config(load_config(EXAMPLES / "netns-hostgw.toml"))["cniVersion"] == "1.1.0"


def test_configs_the_runtime_cannot_serve_are_refused_with_the_fix():
    too_new = _k3s_config(multus={"version": "v4.0.2", "mode": "host"},
                          plugin={"path": "/bin/true", "type": "cnilab",
                                  "config": {"cniVersion": "1.1.0"}})
    with pytest.raises(LabError, match=r"1\.1\.0 is newer than Multus v4\.0\.2 accepts") as e:
        base_config(too_new)
    assert 'cniVersion = "1.0.0"' in e.value.hint
    default_route = _k3s_config(multus={"version": "v4.0.2", "mode": "host"},
                                plugin={"path": "/bin/true", "type": "cnilab", "config": {
                                    "ipam": {"type": "host-local",
                                             "routes": [{"dst": "0.0.0.0/0"}]}}})
    with pytest.raises(LabError, match="collides with the default route") as e:
        base_config(default_route)
    assert "pod CIDR" in e.value.hint


def test_any_plugin_gets_the_nodes_values_and_the_peer_list():
    config = parse_config({
        "lab": {"name": "x"}, "nodes": [{"name": "node1"}, {"name": "node2"}],
        "plugin": {"path": "/bin/true", "type": "theirs", "config": {
            "me": "${NODE_NAME}@${NODE_IP}", "cidr": "${POD_CIDR}", "peers": "${PEERS}",
            "all": "${NODES}", "ipam": {"type": "host-local", "subnet": "${NODE_POD_SUBNET}"}}}})
    spec = network_spec(config, nodes_for(config))
    node2 = spec.configs["node2"]
    assert node2["me"] == "node2@10.99.0.12" and node2["cidr"] == "10.244.0.0/16"
    assert node2["ipam"]["subnet"] == "10.244.1.0/24"
    assert node2["peers"] == [{"name": "node1", "ip": "10.99.0.11", "podSubnet": "10.244.0.0/24"}]
    assert [n["name"] for n in node2["all"]] == ["node1", "node2"]
    assert spec.pod_subnets == {"node1": {4: "10.244.0.0/24"}, "node2": {4: "10.244.1.0/24"}}
    assert spec.ipam_type == "host-local"
