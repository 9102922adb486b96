"""`[libvirt]` section of lab.toml. STUB — owned by the libvirt work: add fields here."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class LibvirtSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
