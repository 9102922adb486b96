"""Providers make nodes: netns (default), libvirt, podman (containers), existing (SSH), vagrant.

`make_provider` imports only the backend asked for, so `lab status` on a netns lab never loads
libvirt or paramiko.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from lab.api import LabError

if TYPE_CHECKING:
    from lab.api import Node, Provider
    from lab.config import LabConfig

# provider name -> (module, class); modules other than netns belong to the VM / SSH work.
PROVIDERS = {
    "netns": ("lab.nodes.providers.netns", "NetnsProvider"),
    "libvirt": ("lab.nodes.providers.libvirt.provider", "LibvirtProvider"),
    "podman": ("lab.nodes.providers.podman.provider", "PodmanProvider"),
    "existing": ("lab.nodes.providers.existing", "ExistingProvider"),
    "vagrant": ("lab.nodes.providers.vagrant", "VagrantProvider"),
}


def make_provider(config: LabConfig) -> Provider:
    name = config.lab.provider
    if name not in PROVIDERS:
        raise LabError(f"unknown provider {name!r}", where="lab.provider",
                       hint=f"use one of {', '.join(PROVIDERS)}")
    module_name, class_name = PROVIDERS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            raise LabError(f"provider {name!r} is not available in this install",
                           where="lab.provider",
                           hint="use provider = \"netns\" or update cnilab") from None
        raise LabError(f"provider {name!r} needs the Python module {e.name!r}",
                       where="lab.provider",
                       hint="install the extras: pip install 'cnilab[vm]'") from None
    provider: Provider = getattr(module, class_name)(config)
    return provider


# Where the plugin under test goes on a node, per provider: netns nodes share the host's
# filesystem, so each gets its own dir under its state dir; machines of their own use the CNI
# default (copied there with put_file).
NODE_LOCAL_PLUGIN_DIR = {"netns"}
DEFAULT_PLUGIN_DIR = "/opt/cni/bin"


def plugin_dir(provider_name: str, node: Node) -> str:
    if provider_name in NODE_LOCAL_PLUGIN_DIR:
        return f"{node.state_dir}/bin"
    return DEFAULT_PLUGIN_DIR


def plugin_executable(config: LabConfig) -> Path:
    """The plugin under test on the harness, or a clear error before anything is made."""
    local = config.plugin_path
    if not local.is_file():
        raise LabError(f"plugin.path: no plugin executable at {local}",
                       hint="build ours with `python -m plugin.build` (-> dist/cnilab) "
                            "or point plugin.path at the CNI plugin to test")
    if not os.access(local, os.X_OK):
        raise LabError(f"plugin.path: {local} is not executable", hint=f"chmod +x {local}")
    return local


def provider_emulates(provider: object) -> bool:
    """Whether the provider's nodes run under software emulation (libvirt under TCG): K3s and
    Multus waits the user did not size are stretched for them."""
    return bool(getattr(provider, "emulated", False))
