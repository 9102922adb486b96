"""`[ssh]`, `[existing]` and `[vagrant]` sections of lab.toml. STUB — owned by the SSH work."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class SshSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExistingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VagrantSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
