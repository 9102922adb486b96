"""`[libvirt]` section of lab.toml: where the VMs run and what they look like.

The lab network's subnet and the node addresses are not here: they are `[network] underlay`
and the node order, as for every provider (node i gets .11+i, the host side of the NAT
network takes .1).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class LibvirtSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # libvirt connection URI
    uri: str = Field(default="qemu:///system")
    # "cnilab-debian-12" (built by `lab image build`), a catalog name ("debian-12",
    # "ubuntu-24.04"), a local path, a file:// URL, or an https:// URL with "#sha256=<hex>"
    image: str = Field(default="cnilab-debian-12")
    memory_mib: int = Field(default=1024, ge=256)
    vcpus: int = Field(default=1, ge=1, le=64)
    # each node's disk: a qcow2 overlay over the base image (never smaller than the base)
    disk_gib: int = Field(default=4, ge=1)
    # auto: KVM when a probe kernel really boots under it, else TCG (with a warning)
    accel: Literal["auto", "kvm", "tcg"] = Field(default="auto")
    # "nat": nodes reach the internet through the host (connected K3s installs);
    # "isolated": nodes reach only the host and each other (air-gapped labs, CI without internet)
    forward: Literal["nat", "isolated"] = Field(default="nat")
    # seconds until every node answers SSH (TCG boots take ~1-2 minutes)
    boot_timeout: float = Field(default=420, gt=0)
    # login user cloud-init creates (key only, passwordless sudo)
    user: str = Field(default="cnilab", pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    # parent of the lab's storage pool directory (cnilab-<lab>)
    pool_dir: Path = Field(default=Path("/var/lib/libvirt/images"))
    # where each VM's serial console is logged (read back when a node does not come up)
    console_log_dir: Path = Field(default=Path("/var/log/libvirt/qemu"))
    # images: default /var/cache/cnilab/images as root, else ~/.cache/cnilab/images
    image_cache: Path | None = Field(default=None)
