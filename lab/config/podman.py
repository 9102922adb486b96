"""`[podman]` section of lab.toml: container nodes (the `podman` provider).

Each node is a privileged container from the node image `lab image node` builds; the lab
network is a bridge in the lab's switch namespace, as for netns labs, with the `[network]`
addresses. podman keeps this harness's containers, images and volumes in its own storage
(`storage_dir`), never in the host's default one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_STORAGE = Path("/var/lib/cnilab-podman")   # not under /var/lib/cnilab: netns labs own that


class PodmanSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # the node image: the one `lab image node` builds (default), or any image reference the
    # lab's storage holds (it needs what the node image has: python3, iproute2, nsenter, …)
    image: str | None = Field(default=None)
    # OCI runtime: runc works where crun refuses (hosts whose root cannot raise rlimits)
    runtime: str = Field(default="runc", pattern=r"^[a-z0-9_.-]+$")
    cgroup_manager: Literal["cgroupfs", "systemd"] = Field(default="cgroupfs")
    # the harness's own podman storage (containers, images, volumes): the host's default
    # storage is never touched
    storage_dir: Path = Field(default=DEFAULT_STORAGE)
    # rlimits each node gets (soft = hard). Open files default to the hard limit `lab up` runs
    # under: the most root may grant where it cannot raise rlimits (podman's own default,
    # 1048576, then fails to start the container); K3s and containerd need more than 1024.
    # nproc binds nothing in a privileged node (CAP_SYS_ADMIN is exempt), but runc must be
    # able to set it: 1024 can be set here where 65536 cannot.
    nofile: int | None = Field(default=None, ge=256)
    nproc: int = Field(default=1024, ge=64)
    # containerd's images and snapshots on the rancher volume instead of tmpfs (RAM): slower
    # to remove (13 s a node here at `lab down`), for hosts short of memory
    containerd_on_disk: bool = False
    # seconds until every container is up and wired
    start_timeout: float = Field(default=120, gt=0)
