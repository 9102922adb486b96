"""lab/cluster/deploy.py: another plugin file deployed as the lab's own would be."""
from __future__ import annotations

from pathlib import Path

from lab.cluster.actions import node_setup_script
from lab.cluster.deploy import with_plugin_file
from lab.config import load_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_another_file_goes_in_under_the_labs_type_unbuilt_with_its_hooks(tmp_path):
    config = load_config(EXAMPLES / "netns-go-plugin.toml")
    assert config.plugin.build is not None
    other = tmp_path / "go-ptp-v1.4"
    other.write_text("#!/bin/sh\n")
    swapped = with_plugin_file(config, other)
    assert swapped.plugin_path == other
    assert swapped.plugin.plugin_type == config.plugin.plugin_type == "go-ptp"
    assert swapped.plugin.build is None          # a named file is shipped as it is
    # the config's own folder still resolves its relative paths (the node_setup hook)
    assert node_setup_script(swapped) == node_setup_script(config) is not None
    assert swapped.plugin.config == config.plugin.config and swapped.name == config.name
    assert config.plugin_path != other           # the lab's own config is left alone


def test_a_type_the_lab_took_from_its_file_name_stays_the_type(tmp_path):
    (tmp_path / "my-cni").write_text("#!/bin/sh\n")
    (tmp_path / "lab.toml").write_text('[lab]\nname = "t"\n[[nodes]]\nname = "node1"\n'
                                       '[plugin]\npath = "my-cni"\n')
    config = load_config(tmp_path / "lab.toml")
    assert config.plugin.type is None
    swapped = with_plugin_file(config, tmp_path / "second-build")
    assert swapped.plugin.plugin_type == "my-cni"
