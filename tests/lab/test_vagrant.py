"""The vagrant provider: the Vagrantfile validates, vagrant's outputs parse, lab.toml reaches it.

A real `vagrant up` needs a box download (debian/bookworm64 from Vagrant Cloud): no internet
here, so machines are never created in these tests. What runs for real: `vagrant validate` and
`vagrant status --machine-readable` on the repository's Vagrantfile with vagrant-libvirt loaded,
and `vagrant ssh-config` output rendered from Vagrant's own installed template.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from lab.api import LabError
from lab.config import LabConfig
from lab.nodes.providers.vagrant import (
    VagrantProvider,
    parse_machine_states,
    parse_ssh_config,
    vagrant_env,
)

REPO = Path(__file__).resolve().parents[2]
needs_vagrant = pytest.mark.skipif(shutil.which("vagrant") is None, reason="vagrant not installed")

# `vagrant ssh-config` for two vagrant-libvirt machines, in the shape the Vagrant docs and
# Vagrant 2.3's templates/commands/ssh_config/config.erb give (blank lines as Erubi leaves them).
DOC_SAMPLE = """\
Host node1
  HostName 192.168.121.17
  User vagrant
  Port 22
  UserKnownHostsFile /dev/null
  StrictHostKeyChecking no
  PasswordAuthentication no

  IdentityFile /home/me/lab/.vagrant/machines/node1/libvirt/private_key

  IdentitiesOnly yes
  LogLevel FATAL

Host node2
  HostName 192.168.121.203
  User vagrant
  Port 22
  UserKnownHostsFile /dev/null
  StrictHostKeyChecking no
  PasswordAuthentication no
  IdentityFile "/home/me/my labs/.vagrant/machines/node2/libvirt/private_key"
  IdentitiesOnly yes
  LogLevel FATAL
"""


def config(tmp_path, **vagrant) -> LabConfig:
    return LabConfig.model_validate({
        "lab": {"name": "vg", "provider": "vagrant", "state_dir": str(tmp_path / "harness")},
        "nodes": [{"name": "node1", "role": "server"}, {"name": "node2"}],
        "plugin": {"path": "/bin/true"},
        "vagrant": {"dir": str(REPO), **vagrant},
    })


def test_parse_ssh_config_doc_sample():
    eps = parse_ssh_config(DOC_SAMPLE)
    assert sorted(eps) == ["node1", "node2"]
    assert (eps["node1"].hostname, eps["node1"].user, eps["node1"].port) == \
        ("192.168.121.17", "vagrant", 22)
    assert eps["node2"].identity_file == \
        "/home/me/my labs/.vagrant/machines/node2/libvirt/private_key"


def render_vagrant_template(**values) -> str:
    """Renders Vagrant's installed ssh_config template the way Vagrant does (Erubi, trim)."""
    gems = Path("/usr/share/rubygems-integration/all/gems")
    templates = sorted(gems.glob("vagrant-2*/templates/commands/ssh_config/config.erb"))
    if not templates or shutil.which("ruby") is None:
        pytest.skip("Vagrant's ssh_config template / ruby not installed")
    script = (
        "require 'erubi'; require 'json'; v = JSON.parse(STDIN.read); "
        "host_key, config, ssh_host, ssh_user, ssh_port, verify_host_key, private_key_path, "
        "keys_only, log_level, forward_agent, forward_x11, proxy_command = "
        "v.values_at('host_key', 'config', 'ssh_host', 'ssh_user', 'ssh_port', "
        "'verify_host_key', 'private_key_path', 'keys_only', 'log_level', 'forward_agent', "
        "'forward_x11', 'proxy_command'); "
        f"print eval(Erubi::Engine.new(File.read({str(templates[-1])!r}), trim: true).src)")
    defaults = {"config": None, "verify_host_key": False, "keys_only": True, "log_level": None,
                "forward_agent": False, "forward_x11": False, "proxy_command": None}
    done = subprocess.run(["ruby", "-e", script], input=json.dumps({**defaults, **values}),
                          capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


def test_parse_ssh_config_from_vagrants_own_template():
    text = "".join(render_vagrant_template(
        host_key=name, ssh_host=ip, ssh_user="vagrant", ssh_port=22,
        private_key_path=[f"/tmp/x y/.vagrant/machines/{name}/libvirt/private_key"])
        for name, ip in (("node1", "192.168.121.5"), ("node2", "192.168.121.6")))
    assert "StrictHostKeyChecking no" in text       # why the lab never uses vagrant's trust
    eps = parse_ssh_config(text)
    assert eps["node2"].hostname == "192.168.121.6" and eps["node2"].port == 22
    assert eps["node1"].identity_file.endswith("/node1/libvirt/private_key")
    proxied = parse_ssh_config(render_vagrant_template(
        host_key="node1", ssh_host="192.168.121.5", ssh_user="vagrant", ssh_port=22,
        private_key_path=["/k"], proxy_command="ssh remote-host nc %h %p"))
    assert proxied["node1"].proxy_command == "ssh remote-host nc %h %p"


def test_parse_ssh_config_without_hostname_is_a_clear_error():
    with pytest.raises(LabError, match="no HostName for node1"):
        parse_ssh_config("Host node1\n  User vagrant\n")


def test_parse_machine_states():
    text = ("1795870922,node1,metadata,provider,libvirt\n"
            "1795870922,node1,state,running\n"
            "1795870922,node2,state,not_created\n"
            "1795870922,node2,state-human-long,The Libvirt domain is not created%!(VAGRANT_COMMA) "
            "run up\n"
            "1795870922,,ui,info,Current machine states:\\n\\nnode1 running\n")
    assert parse_machine_states(text) == {"node1": "running", "node2": "not_created"}


def test_lab_toml_reaches_the_vagrantfile_through_env(tmp_path):
    cfg = config(tmp_path, memory=1024, cpus=1, box="debian/bookworm64", driver="qemu")
    env = vagrant_env(cfg, cfg.vagrant, REPO, base={"PATH": "/usr/bin"})
    assert env["CNILAB_NODES"] == "node1,node2"
    assert (env["CNILAB_MEMORY"], env["CNILAB_CPUS"], env["CNILAB_DRIVER"]) == ("1024", "1", "qemu")
    assert env["VAGRANT_DOTFILE_PATH"] == str(tmp_path / "harness" / "vagrant")
    assert env["CNILAB_SSH_DIR"] == str(tmp_path / "harness" / "ssh")
    assert env["VAGRANT_CWD"] == str(REPO) and env["PATH"] == "/usr/bin"


@needs_vagrant
def test_vagrantfile_validates_with_lab_settings(tmp_path):
    provider = VagrantProvider(config(tmp_path, driver="qemu", memory=512))
    done = provider.vagrant("validate", timeout=120)
    assert "validated successfully" in done.stdout


@needs_vagrant
def test_vagrantfile_rejects_bad_numbers(tmp_path):
    cfg = config(tmp_path)
    env = vagrant_env(cfg, cfg.vagrant, REPO)
    env["CNILAB_MEMORY"] = "lots"
    done = subprocess.run(["vagrant", "validate"], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode != 0 and "lots" in (done.stdout + done.stderr)


@needs_vagrant
def test_real_vagrant_status_reads_every_configured_node(tmp_path):
    provider = VagrantProvider(config(tmp_path))
    states = provider.machine_states()
    assert states == {"node1": "not_created", "node2": "not_created"}
    assert [(s.name, s.state) for s in provider.status()] == \
        [("node1", "missing"), ("node2", "missing")]
    assert provider.nodes() == []
    provider.destroy()         # never created: nothing to do, nothing raised
    assert not (tmp_path / "harness" / "vagrant").exists()


def test_missing_vagrantfile_is_a_clear_error(tmp_path):
    provider = VagrantProvider(config(tmp_path, dir=str(tmp_path)))
    with pytest.raises(LabError, match="no Vagrantfile in"):
        provider.machine_states()
