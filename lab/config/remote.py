"""`[ssh]`, `[existing]` and `[vagrant]` sections of lab.toml.

    [ssh]                       # how the harness logs in to SSH nodes (libvirt, existing, vagrant)
    user = "root"               # non-root users run commands through `sudo -n`
    port = 22
    key = "~/.ssh/id_ed25519"   # optional: use this client key instead of the lab's own
    connect_timeout = 10

    [[existing.hosts]]          # machines that already exist (bare-metal runners)
    name = "node1"              # must match a [[nodes]] name
    address = "192.0.2.10"
    user = "debian"             # optional, else [ssh].user
    port = 22                   # optional, else [ssh].port
    host_key = "ssh-ed25519 AAAA…"   # pinned (ssh-keyscan -t ed25519 HOST, or the .pub file)
    # trust_on_first_use = true      # instead of host_key: record the offered key, with a warning

    [vagrant]
    dir = "."                   # where the Vagrantfile is (the repository root has one)
    provider = "libvirt"
    box = "debian/bookworm64"
    memory = 2048               # MiB per node
    cpus = 2
    driver = "kvm"              # "qemu" for software emulation (TCG)
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_KEY_LINE = re.compile(
    r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/=]+( .*)?$")
# Both reach generated ssh_config files and command lines: whole-string matches only.
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}\$?")
_ADDRESS = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}|[0-9A-Fa-f:.]{2,45}")


def _user(v: str | None) -> str | None:
    if v is not None and not _USER.fullmatch(v):
        raise ValueError(f"{v[:80]!r} is not a login name: lowercase letters, digits, '_' and "
                         "'-', starting with a letter or '_', at most 32 (e.g. debian)")
    return v


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SshSettings(_Strict):
    user: str = "root"
    port: int = Field(default=22, ge=1, le=65535)
    key: Path | None = None          # client key override; default: the lab's generated key
    connect_timeout: float = Field(default=10, gt=0)

    _check_user = field_validator("user")(classmethod(lambda cls, v: _user(v)))

    @property
    def key_path(self) -> Path | None:
        return self.key.expanduser() if self.key is not None else None


class ExistingHost(_Strict):
    name: str
    address: str
    user: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    host_key: str | None = None
    trust_on_first_use: bool = False

    _check_user = field_validator("user")(classmethod(lambda cls, v: _user(v)))

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        if not _ADDRESS.fullmatch(v):
            raise ValueError(f"{v[:80]!r} is not a host name or IP address (e.g. 192.0.2.10 "
                             "or runner1.example.org)")
        return v

    @field_validator("host_key")
    @classmethod
    def _key_line(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = " ".join(v.split())
        if v.count(" ") >= 1 and not _KEY_LINE.match(v):
            # "host ssh-ed25519 AAAA" as ssh-keyscan prints it: drop the host field
            v = v.split(" ", 1)[1]
        if not _KEY_LINE.match(v):
            raise ValueError(f"{v!r} is not an SSH public key line; write it as "
                             "\"ssh-ed25519 AAAA…\" (ssh-keyscan -t ed25519 HOST prints it)")
        return v

    @model_validator(mode="after")
    def _pinned(self) -> ExistingHost:
        if self.host_key is None and not self.trust_on_first_use:
            raise ValueError(f"host {self.name!r}: host_key is required (the node's public host "
                             "key, e.g. from `ssh-keyscan -t ed25519 ADDRESS`), or set "
                             "trust_on_first_use = true to record the key offered on first "
                             "contact")
        if self.host_key is not None and self.trust_on_first_use:
            raise ValueError(f"host {self.name!r}: give host_key or trust_on_first_use, not both")
        return self


class ExistingSettings(_Strict):
    hosts: list[ExistingHost]
    # Where the lab puts its files on the hosts; `lab down` removes exactly this and the plugin.
    state_dir: str = "/var/lib/cnilab"
    plugin_dir: str = "/opt/cni/bin"

    @model_validator(mode="after")
    def _unique(self) -> ExistingSettings:
        if not self.hosts:
            raise ValueError("hosts: list at least one [[existing.hosts]] entry")
        names = [h.name for h in self.hosts]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"hosts: names appear twice: {', '.join(dupes)}")
        for path in (self.state_dir, self.plugin_dir):
            if not path.startswith("/") or path.rstrip("/") in ("", "/usr", "/etc", "/var"):
                raise ValueError(f"{path!r} must be an absolute directory of the lab's own "
                                 "(`lab down` removes what the lab put there)")
        return self


class VagrantSettings(_Strict):
    dir: Path = Path(".")            # relative paths are taken from lab.toml's directory
    provider: Literal["libvirt"] = "libvirt"
    box: str = "debian/bookworm64"
    memory: int = Field(default=2048, ge=256)
    cpus: int = Field(default=2, ge=1)
    libvirt_uri: str = "qemu:///system"
    driver: Literal["kvm", "qemu"] = "kvm"   # "qemu" = software emulation where KVM hangs
    cpu_mode: str | None = None              # libvirt <cpu mode>; default vagrant-libvirt's
    boot_timeout: float = Field(default=600, gt=0)   # seconds until every node answers SSH
