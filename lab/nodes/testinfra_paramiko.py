"""testinfra's paramiko backend, pinned: honours UserKnownHostsFile and StrictHostKeyChecking.

Registered for `paramiko://` by lab.nodes.ssh.register_pinned_paramiko_backend(). Stock testinfra
(10.x) loads no known_hosts and accepts any host key with a warning; with these two ssh_config
options set (as SshNode writes them) a key other than the pinned one is refused.
"""
from __future__ import annotations

import os
from typing import Any

import paramiko
from testinfra.backend.paramiko import ParamikoBackend


class PinnedParamikoBackend(ParamikoBackend):
    def _load_ssh_config(self, client: paramiko.SSHClient, cfg: dict[str, Any],
                         ssh_config: paramiko.SSHConfig, ssh_config_dir: str = "~/.ssh") -> None:
        super()._load_ssh_config(client, cfg, ssh_config, ssh_config_dir)
        options = ssh_config.lookup(self.host.name)
        for path in options.get("userknownhostsfile", "").split():
            path = os.path.expanduser(path)
            if os.path.exists(path):
                client.load_host_keys(path)
        if options.get("stricthostkeychecking") == "yes":
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        if options.get("identitiesonly") == "yes":
            cfg["allow_agent"] = False
            cfg["look_for_keys"] = False
