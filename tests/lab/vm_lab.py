"""Real VM labs for tests: build-or-reuse the image, provision on qemu:///system, always
destroy, and say exactly what (if anything) was left behind.

`provisioned_vm_lab(...)` is the context manager; tests/lab/conftest.py turns it into the
session fixture `vm_lab` (two nodes), which end-to-end tests can share.
"""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path

import pytest

from lab.config import LabConfig, parse_config

REPO = Path(__file__).resolve().parents[2]
LAB_PREFIX = "t5"                 # resources: cnilab-t5<random>-<node>
VM_URI = "qemu:///system"


@dataclass
class VmLab:
    config: LabConfig
    provider: object              # LibvirtProvider (imported lazily: libvirt is optional)
    nodes: list                   # list[SshNode], in config order
    provision_seconds: float


def require_vm_host() -> None:
    """Skips when this machine cannot run VMs at all; a broken libvirtd fails instead."""
    if os.geteuid() != 0:
        pytest.skip("VM tests need root (qemu:///system, image build)")
    for tool in ("qemu-system-x86_64", "mmdebstrap", "mkfs.ext4", "qemu-img", "virsh"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/setup.sh installs it)")
    try:
        import libvirt  # noqa: F401
    except ImportError:
        pytest.skip("libvirt-python is not installed (pip install 'cnilab[vm]')")
    subprocess.run(["bash", str(REPO / "scripts" / "start-services.sh")], check=False)


def free_subnet() -> IPv4Network:
    """A 192.168.x.0/24 no route on this host uses yet."""
    routes = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True,
                            text=True, check=False).stdout
    used = [IPv4Network(w, strict=False) for w in routes.split() if w[:1].isdigit() and "/" in w]
    for _ in range(200):
        candidate = IPv4Network(f"192.168.{secrets.choice(range(150, 250))}.0/24")
        if not any(candidate.overlaps(u) for u in used):
            return candidate
    raise RuntimeError("no free 192.168.x.0/24 for a test lab")


def free_subnet6() -> IPv6Network:
    """An fd00:NNNN::/64 no route on this host uses yet."""
    routes = subprocess.run(["ip", "-6", "route", "show", "table", "all"], capture_output=True,
                            text=True, check=False).stdout
    used = [IPv6Network(w, strict=False) for w in routes.split() if ":" in w and "/" in w
            and w[:1] in "0123456789abcdef"]
    for _ in range(200):
        candidate = IPv6Network(f"fd00:{secrets.randbelow(0xffff) + 1:x}::/64")
        if not any(candidate.overlaps(u) for u in used):
            return candidate
    raise RuntimeError("no free fd00:x::/64 for a test lab")


def vm_config(state_dir: Path, nodes: tuple[str, ...], *, lab: str | None = None,
              **libvirt_settings: object) -> LabConfig:
    return parse_config({
        "lab": {"name": lab or LAB_PREFIX + secrets.token_hex(3), "provider": "libvirt",
                "state_dir": str(state_dir)},
        "nodes": [{"name": n} for n in nodes],
        "network": {"underlay": str(free_subnet()), "pod_cidr": "10.244.0.0/16"},
        "plugin": {"path": str(REPO / "dist" / "cnilab")},
        # isolated: test VMs must never send traffic beyond this host
        "libvirt": {"uri": VM_URI, "memory_mib": 768, "boot_timeout": 480, "forward": "isolated",
                    **libvirt_settings},
    })


def leftovers(provider: object) -> list[str]:
    """Everything of this lab still on the host: domains, network, pool, volume files,
    console logs, and libvirt firewall chains once no libvirt network runs any more."""
    import libvirt

    from lab.nodes.providers.libvirt import firewall, names, xml
    from lab.nodes.providers.libvirt.provider import LibvirtProvider

    assert isinstance(provider, LibvirtProvider)
    conn = libvirt.open(VM_URI)
    try:
        found = []
        lab = provider.lab
        for dom in conn.listAllDomains(0):
            tag = xml.read_tag(dom.XMLDesc(0))
            if dom.name().startswith(f"cnilab-{lab}-") or (tag and tag.lab == lab):
                found.append(f"domain {dom.name()}")
        for net in conn.listAllNetworks(0):
            if net.name() == provider.network_name:
                found.append(f"network {net.name()}")
        for pool in conn.listAllStoragePools(0):
            if pool.name() == provider.pool_name:
                found.append(f"pool {pool.name()}")
        if provider.pool_path.exists():
            found.append(f"pool directory {provider.pool_path}: "
                         f"{sorted(p.name for p in provider.pool_path.iterdir())}")
        for log in provider.settings.console_log_dir.glob(f"cnilab-{lab}-*"):
            found.append(f"log file {log}")
        bridge = names.bridge_name(lab)
        if Path(f"/sys/class/net/{bridge}").exists():
            found.append(f"bridge {bridge}")
        others_active = conn.listAllNetworks(libvirt.VIR_CONNECT_LIST_NETWORKS_ACTIVE)
        if not others_active:
            found += [f"iptables chain {c}" for c in firewall.libvirt_chains()]
        else:
            rules = subprocess.run(["iptables-save"], capture_output=True, text=True,
                                   check=False).stdout
            found += [f"iptables rule {r}" for r in rules.splitlines() if bridge in r]
        return found
    finally:
        conn.close()


@contextmanager
def provisioned_vm_lab(state_dir: Path, nodes: tuple[str, ...] = ("n1", "n2"),
                       **libvirt_settings: object) -> Iterator[VmLab]:
    """Builds or reuses the image, provisions, yields, and always destroys; fails if the
    destroy left anything behind."""
    import time

    from lab.nodes.providers.libvirt.image_build import build_image
    from lab.nodes.providers.libvirt.provider import LibvirtProvider

    require_vm_host()
    build_image(report=print)
    config = vm_config(state_dir, nodes, **libvirt_settings)
    provider = LibvirtProvider(config, report=print)
    provider.destroy()            # molecule's order: start from nothing
    try:
        started = time.monotonic()
        lab_nodes = provider.provision()
        yield VmLab(config, provider, lab_nodes, time.monotonic() - started)
    finally:
        for node in provider.nodes():
            close = getattr(node, "close", None)
            if close:
                close()
        provider.destroy()
        left = leftovers(provider)
        provider.close()
        assert not left, f"lab down left: {left}"
