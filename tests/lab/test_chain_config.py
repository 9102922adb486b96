"""[[plugin.chain]]: the plugin under test plus third-party plugins as one conflist."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from lab.api import LabError
from lab.cluster.chain import chained_executables
from lab.config import load_config
from lab.runtime.cni_runtime import plugin_configs
from lab.runtime.network import network_spec

BASE = """
[lab]
name = "chaintest"

[[nodes]]
name = "node1"

[network]
underlay = "10.99.0.0/24"
pod_cidr = "10.244.0.0/16"

[plugin]
path = "/bin/true"
type = "cnilab"

[plugin.config]
cniVersion = "1.0.0"
name = "chained"
"""

CHAIN = BASE + """
[[plugin.chain]]
type = "tuning"
[plugin.chain.config]
capabilities = { mac = true }
sysctl = { "net.ipv4.conf.eth0.accept_redirects" = "0" }
note = "${NODE_NAME}"

[[plugin.chain]]
type = "portmap"
config = { capabilities = { portMappings = true } }
"""


class FakeNode:
    name = "node1"
    address = "10.99.0.11"
    state_dir = "/var/lib/cnilab/chaintest/node1"


def load(tmp_path: Path, text: str):
    path = tmp_path / "lab.toml"
    path.write_text(textwrap.dedent(text))
    return load_config(path)


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(LabError) as info:
        load(tmp_path, text)
    return info.value.describe()


def test_chain_renders_one_conflist_with_ours_first(tmp_path):
    spec = network_spec(load(tmp_path, CHAIN), [FakeNode()])   # type: ignore[list-item]
    conf = spec.configs["node1"]
    assert (conf["name"], conf["cniVersion"]) == ("chained", "1.0.0")
    types = [p["type"] for p in conf["plugins"]]
    assert types == ["cnilab", "tuning", "portmap"]
    ours, tuning, _ = conf["plugins"]
    # the defaults the lab fills in for our plugin stay on it, not on the conflist
    assert ours["ipam"]["type"] == "host-local" and ours["nodes"][0]["name"] == "node1"
    assert ours["logFile"].startswith(FakeNode.state_dir) and "name" not in ours
    assert tuning["note"] == "node1"                       # placeholders filled per node
    assert tuning["capabilities"] == {"mac": True}
    assert spec.plugin_type == "cnilab" and spec.ipam_type == "host-local"
    # what libcni hands each plugin: the list's name and version on every one
    assert all(p["name"] == "chained" and p["cniVersion"] == "1.0.0"
               for p in plugin_configs(conf))


def test_no_chain_keeps_a_single_plugin_config(tmp_path):
    conf = network_spec(load(tmp_path, BASE), [FakeNode()]).configs["node1"]  # type: ignore[list-item]
    assert conf["type"] == "cnilab" and "plugins" not in conf


@pytest.mark.parametrize(("extra", "expected"), [
    ('[[plugin.chain]]\ntype = "../tuning"\n', "plugin.chain[0].type"),
    ('[[plugin.chain]]\ntype = "tuning"\nconfig = { name = "x" }\n',
     "config.name is set by [plugin.config]"),
    ('[[plugin.chain]]\ntype = "tuning"\nconfig = { type = "x" }\n',
     "config.type is set by the chain entry's type"),
    ('[[plugin.chain]]\ntype = "tuning"\nconfig = { mtu = "9000" }\n',
     "plugin.chain[0].config.mtu: must be an integer"),
    ('[[plugin.chain]]\ntype = "tuning"\nconfig = { a = "${NODE_NAM}" }\n',
     "plugin.chain[0].config.a: unknown placeholder ${NODE_NAM}; did you mean ${NODE_NAME}?"),
    ('[[plugin.chain]]\ntype = "tuning"\nsysctl = {}\n',
     "plugin.chain[0].sysctl: unknown key; remove it; this section takes config, path, type"),
])
def test_bad_chain_entries_name_the_key_and_the_fix(tmp_path, extra, expected):
    assert expected in error_of(tmp_path, BASE + extra)


def test_a_shipped_chain_entry_never_replaces_another_plugin(tmp_path):
    over_ours = BASE + '[[plugin.chain]]\ntype = "cnilab"\npath = "/bin/true"\n'
    assert "over the plugin under test" in error_of(tmp_path, over_ours)
    twice = BASE + ('[[plugin.chain]]\ntype = "tuning"\npath = "/bin/true"\n'
                    '[[plugin.chain]]\ntype = "tuning"\npath = "/bin/false"\n')
    assert "plugin.chain[1].path: another entry ships a different tuning" in error_of(
        tmp_path, twice)
    same = BASE + '[[plugin.chain]]\ntype = "tuning"\npath = "/bin/true"\n' * 2
    assert [e.type for e in load(tmp_path, same).plugin.chain] == ["tuning", "tuning"]


def test_a_conflist_in_plugin_config_and_a_chain_are_refused_together(tmp_path):
    text = BASE + 'plugins = [{ type = "ptp" }]\n[[plugin.chain]]\ntype = "tuning"\n'
    assert "both chain plugins" in error_of(tmp_path, text)


def test_chain_paths_are_checked_before_any_node_exists(tmp_path):
    tool = tmp_path / "tuning"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o644)
    config = load(tmp_path, BASE + '[[plugin.chain]]\ntype = "tuning"\npath = "tuning"\n')
    with pytest.raises(LabError) as info:
        chained_executables(config)
    assert "plugin.chain[0].path" in info.value.describe()
    tool.chmod(0o755)
    assert chained_executables(config) == {"tuning": tool}
