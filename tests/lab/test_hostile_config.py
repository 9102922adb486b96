"""Every value from lab.toml or the command line that reaches a shell, a path or a generated
file (ssh_config, systemd units, ip -batch) is checked whole: hostile values — shell
metacharacters, newlines, '..', unicode, 10 kB strings — are refused when the config is read,
in one line naming the key, never a traceback, and nothing is run."""
from __future__ import annotations

import copy
from typing import Any

import pytest

from lab.api import LabError
from lab.config import parse_config

HOSTILE = ["x$(touch /tmp/cnilab-pwned)", "x;touch /tmp/cnilab-pwned", "x`id`", "ho4\n",
           "a\nProxyCommand sh -c 'touch /tmp/cnilab-pwned'", "../../../../tmp/x", "x y",
           "ñodé", "x" * 10_000, "", "-t", "x\0y", "'q'", '"q"']
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def base() -> dict[str, Any]:
    return {"lab": {"name": "hostile", "provider": "existing"},
            "nodes": [{"name": "node1", "role": "server"}],
            "plugin": {"path": "/bin/true"},
            "ssh": {"user": "debian"},
            "existing": {"hosts": [{"name": "node1", "address": "192.0.2.10", "host_key": KEY,
                                    "user": "debian"}]},
            "k3s": {"mode": "airgap", "server_args": ["--disable=traefik"]}}


def put(data: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    data = copy.deepcopy(data)
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


FIELDS = {
    "lab.name": ("lab", "name"),
    "nodes.name": ("nodes", 0, "name"),
    "plugin.type": ("plugin", "type"),
    "plugin.ifname": ("plugin", "ifname"),
    "ssh.user": ("ssh", "user"),
    "existing.user": ("existing", "hosts", 0, "user"),
    "existing.address": ("existing", "hosts", 0, "address"),
    "k3s.version": ("k3s", "version"),
    "k3s.registry_mirror": ("k3s", "registry_mirror"),
    "k3s.download_base": ("k3s", "download_base"),
}


def test_the_base_config_is_accepted():
    assert parse_config(base()).lab.name == "hostile"


@pytest.mark.parametrize("field", sorted(FIELDS))
@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_a_hostile_value_is_refused_in_one_line(field, value):
    with pytest.raises(LabError) as e:
        parse_config(put(base(), FIELDS[field], value))
    message = e.value.describe()
    assert "Traceback" not in message and len(message) < 2000, message


@pytest.mark.parametrize("arg", ["-t", "-t=secret", "--token=x", "-s", "--server=https://x",
                                 "-i", "--node-ip=1.2.3.4"])
def test_server_args_the_harness_sets_are_refused_in_their_short_forms_too(arg):
    with pytest.raises(LabError, match=r"set by the harness"):
        parse_config(put(base(), ("k3s", "server_args"), [arg]))


@pytest.mark.parametrize("name", ["ho4\n", "ho4 ", "Ho4", "a-b", "x" * 21, "lab$"])
def test_a_lab_name_from_the_command_line_is_matched_whole(name):
    with pytest.raises(LabError, match="not a lab name"):
        parse_config(base(), name=name)


def test_a_plugin_file_name_that_cannot_be_a_type_needs_one():
    with pytest.raises(LabError, match=r"set plugin\.type"):
        parse_config(put(base(), ("plugin", "path"), "/opt/my plugin$(id)"))
    ok = parse_config(put(put(base(), ("plugin", "path"), "/opt/my plugin"),
                          ("plugin", "type"), "myplugin"))
    assert ok.plugin.plugin_type == "myplugin"


def test_ssh_config_never_takes_an_option_from_a_value(tmp_path):
    from lab.nodes.ssh import ssh_config_text

    class Node:
        name, address, user, port = "node1", "192.0.2.10", "debian", 22
        key_path = tmp_path / "dir with space" / "id_ed25519"
        known_hosts_path = tmp_path / "known_hosts"
        connect_timeout = 10

        class host_key:
            key_type = "ssh-ed25519"

    text = ssh_config_text(Node())      # type: ignore[arg-type]
    assert f'IdentityFile "{Node.key_path}"' in text
    Node.user = "debian\n  ProxyCommand touch /tmp/x"
    with pytest.raises(LabError, match="cannot go into an ssh_config"):
        ssh_config_text(Node())         # type: ignore[arg-type]
