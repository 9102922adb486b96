"""`[k3s]` and `[multus]` sections of lab.toml. STUB — owned by the K3s work: add fields here."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class K3sSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MultusSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
