"""Nodes as Vagrant machines (the top-level Vagrantfile, vagrant-libvirt).

Vagrant makes and removes the VMs; lab.toml drives it through CNILAB_* variables the
Vagrantfile reads. The Vagrantfile's provisioner installs the lab's client key and the
harness-generated host key of each node, so once `vagrant up` is done the lab talks to the
nodes like to any SSH node, with the host key pinned. Vagrant's state (.vagrant) lives in the
lab's harness dir, so two labs can use the same Vagrantfile.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lab.api import LabError, Node, NodeStatus
from lab.config.remote import SshSettings, VagrantSettings
from lab.nodes import keys
from lab.nodes.providers.ssh_nodes import collect_logs
from lab.nodes.ssh import SshNode, lab_ssh_dir

if TYPE_CHECKING:
    from lab.config import LabConfig

VAGRANT_COMMA = "%!(VAGRANT_COMMA)"   # how machine-readable output escapes a comma in data


@dataclass(frozen=True)
class SshEndpoint:
    """One `Host` block of `vagrant ssh-config`."""

    host: str
    hostname: str
    user: str
    port: int
    identity_file: str = ""
    proxy_command: str = ""


def parse_ssh_config(text: str) -> dict[str, SshEndpoint]:
    """`vagrant ssh-config` output -> endpoint per machine name (OpenSSH config syntax)."""
    blocks: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        if "=" in key:                       # "Key=value" is valid ssh_config too
            key, _, value = line.partition("=")
        key, value = key.strip().lower(), value.strip().strip('"')
        if key == "host":
            current = blocks.setdefault(value, {})
        elif current is not None:
            current.setdefault(key, value)   # first value wins, as in ssh_config
    endpoints = {}
    for name, opts in blocks.items():
        if "hostname" not in opts:
            raise LabError(f"`vagrant ssh-config` gave no HostName for {name}",
                           output=text, hint="is the machine running? `vagrant status`")
        endpoints[name] = SshEndpoint(host=name, hostname=opts["hostname"],
                                      user=opts.get("user", "vagrant"),
                                      port=int(opts.get("port", "22")),
                                      identity_file=opts.get("identityfile", ""),
                                      proxy_command=opts.get("proxycommand", ""))
    return endpoints


def parse_machine_states(text: str) -> dict[str, str]:
    """`vagrant status --machine-readable` -> machine name -> state ("running", "not_created")."""
    states: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.rstrip("\r").split(",", 3)
        if len(fields) == 4 and fields[2] == "state" and fields[1]:
            states[fields[1]] = fields[3].replace(VAGRANT_COMMA, ",")
    return states


def vagrant_env(config: LabConfig, settings: VagrantSettings, vagrant_dir: Path,
                base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment `vagrant` runs with: where its files are, and lab.toml for the
    Vagrantfile (pure, so the mapping from config to Vagrantfile is unit-tested)."""
    env = dict(os.environ if base is None else base)
    env.update({
        "VAGRANT_CWD": str(vagrant_dir),
        "VAGRANT_DOTFILE_PATH": str(config.harness_dir / "vagrant"),
        "VAGRANT_DEFAULT_PROVIDER": settings.provider,
        "CNILAB_LAB": config.name,
        "CNILAB_NODES": ",".join(n.name for n in config.nodes),
        "CNILAB_BOX": settings.box,
        "CNILAB_MEMORY": str(settings.memory),
        "CNILAB_CPUS": str(settings.cpus),
        "CNILAB_LIBVIRT_URI": settings.libvirt_uri,
        "CNILAB_DRIVER": settings.driver,
        "CNILAB_CPU_MODE": settings.cpu_mode or "",
        "CNILAB_SSH_DIR": str(lab_ssh_dir(config.harness_dir)),
    })
    return env


class VagrantProvider:
    def __init__(self, config: LabConfig) -> None:
        self.config = config
        self.settings = config.vagrant or VagrantSettings()
        self.ssh = config.ssh or SshSettings()
        base = config.source.parent if config.source else Path.cwd()
        vdir = self.settings.dir.expanduser()
        self.vagrant_dir = (vdir if vdir.is_absolute() else base / vdir).resolve()
        self.node_names = [n.name for n in config.nodes]

    # --- running vagrant --------------------------------------------------------------------

    def vagrant(self, *args: str, timeout: float = 600, check: bool = True
                ) -> subprocess.CompletedProcess[str]:
        if not (self.vagrant_dir / "Vagrantfile").is_file():
            raise LabError(f"no Vagrantfile in {self.vagrant_dir}", where="vagrant.dir",
                           hint="point [vagrant] dir at the directory holding cnilab's Vagrantfile")
        argv = ["vagrant", *args]
        env = vagrant_env(self.config, self.settings, self.vagrant_dir)
        try:
            done = subprocess.run(argv, env=env, capture_output=True, text=True,
                                  timeout=timeout, check=False, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise LabError("vagrant is not installed",
                           hint="apt install vagrant vagrant-libvirt (Debian 12)") from None
        except subprocess.TimeoutExpired:
            raise LabError(f"`{' '.join(argv)}` did not finish within {timeout:.0f}s") from None
        if check and done.returncode != 0:
            raise LabError(f"`{' '.join(argv)}` failed (rc={done.returncode})",
                           output=done.stderr or done.stdout,
                           hint="the full output is above; `vagrant status` shows the machines")
        return done

    def machine_states(self) -> dict[str, str]:
        return parse_machine_states(self.vagrant("status", "--machine-readable",
                                                 timeout=120).stdout)

    # --- lab.api.Provider -------------------------------------------------------------------

    def provision(self) -> list[Node]:
        # Keys first: the Vagrantfile's provisioner installs them on every node.
        keys.client_keypair(self.config.harness_dir)
        for name in self.node_names:
            keys.host_keys(self.config.harness_dir, name)
        # --provision re-runs the key provisioner on machines that already exist (idempotent).
        self.vagrant("up", "--provision", timeout=self.settings.boot_timeout + 600)
        nodes = self._ssh_nodes(self.node_names)
        for node in nodes:
            node.wait_for_ssh(timeout=self.settings.boot_timeout)
        return list(nodes)

    def nodes(self) -> list[Node]:
        states = self.machine_states()
        running = [n for n in self.node_names if states.get(n) == "running"]
        return list(self._ssh_nodes(running)) if running else []

    def status(self) -> list[NodeStatus]:
        states = self.machine_states()
        endpoints: dict[str, SshEndpoint] = {}
        running = [n for n in self.node_names if states.get(n) == "running"]
        if running:
            endpoints = parse_ssh_config(self.vagrant("ssh-config", *running, timeout=120).stdout)
        return [NodeStatus(name, endpoints[name].hostname if name in endpoints else "",
                           _state_name(states.get(name, "missing")),
                           {"vagrant_state": states.get(name, "")})
                for name in self.node_names]

    def destroy(self) -> None:
        dotfile = self.config.harness_dir / "vagrant"
        if not dotfile.exists():
            return           # vagrant never ran for this lab: nothing of ours to remove
        self.vagrant("destroy", "--force", timeout=600)
        shutil.rmtree(dotfile, ignore_errors=True)

    def collect_logs(self, dest: Path) -> None:
        collect_logs([n for n in self.nodes() if isinstance(n, SshNode)], dest)

    # --- helpers ----------------------------------------------------------------------------

    def _ssh_nodes(self, names: list[str]) -> list[SshNode]:
        endpoints = parse_ssh_config(self.vagrant("ssh-config", *names, timeout=120).stdout)
        # Always the lab's key: it is the one the Vagrantfile's provisioner authorizes.
        key_path = keys.client_keypair(self.config.harness_dir)[0]
        nodes = []
        for name in names:
            if name not in endpoints:
                raise LabError(f"`vagrant ssh-config` did not list {name}",
                               hint="is the machine running? `vagrant status`")
            ep = endpoints[name]
            if ep.proxy_command:
                raise LabError(f"{name} is only reachable through a ProxyCommand "
                               f"({ep.proxy_command}), which the lab's SSH does not run",
                               hint="use a local libvirt (qemu:///system) for the vagrant "
                                    "provider")
            nodes.append(SshNode(name, ep.hostname, user=ep.user, port=ep.port,
                                 host_key=keys.host_keys(self.config.harness_dir, name),
                                 key_path=key_path, files_dir=lab_ssh_dir(self.config.harness_dir),
                                 connect_timeout=self.ssh.connect_timeout))
        return nodes


def _state_name(vagrant_state: str) -> str:
    """Vagrant's words -> lab's ("running", "stopped", "missing")."""
    if vagrant_state == "running":
        return "running"
    if vagrant_state in ("not_created", "missing"):
        return "missing"
    if vagrant_state in ("shutoff", "poweroff", "paused", "suspended", "saved", "stopped"):
        return "stopped"
    return vagrant_state
