"""`[[plugin.chain]]`: third-party plugins chained after the plugin under test.

    [[plugin.chain]]
    type = "tuning"                   # the executable's name on CNI_PATH
    path = "/usr/lib/cni/tuning"      # optional: shipped to every node's plugin dir
    [plugin.chain.config]             # that plugin's own keys (sysctl, capabilities, ...)
    sysctl = { "net.ipv4.conf.eth0.rp_filter" = "0" }

The lab turns [plugin.config] plus the chain into one conflist (lab.runtime.network): the
plugin under test first, keeping every default the lab fills in for it, then each entry in
order, all under the network's name and cniVersion, as libcni hands them out.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# A CNI plugin type (plugin.type and every chain entry's) is a file name in the CNI bin dir (the
# spec: a binary name), and it reaches shell lines and paths on the nodes: no path, no shell
# characters, no leading dot or dash.
PLUGIN_TYPE_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]{0,63}")
# Keys the conflist sets for every plugin: a chained entry's own value would be overwritten.
CONFLIST_KEYS = ("name", "cniVersion")


class ChainedPlugin(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str
    path: Path | None = None
    config: dict[str, Any] = Field(default_factory=dict)

    @field_validator("type")
    @classmethod
    def _type(cls, v: str) -> str:
        if not PLUGIN_TYPE_RE.fullmatch(v):
            raise ValueError(f"{v[:80]!r} is not a plugin type: the file name of a CNI plugin "
                             "(letters, digits, '.', '_', '+', '-'), e.g. tuning or portmap")
        return v

    @model_validator(mode="after")
    def _own_keys_only(self) -> ChainedPlugin:
        for key in (*CONFLIST_KEYS, "type", "prevResult"):
            if key in self.config:
                where = "the chain entry's type" if key == "type" else (
                    "the runtime (from the previous plugin)" if key == "prevResult"
                    else "[plugin.config] for the whole conflist")
                raise ValueError(f"config.{key} is set by {where}: remove it here")
        return self

    def resolved_path(self, base: Path) -> Path | None:
        """The executable to ship, relative paths from the working directory, then from the
        config file's folder (as plugin.path)."""
        if self.path is None:
            return None
        if self.path.is_absolute() or self.path.exists():
            return self.path.absolute()
        return (base / self.path).absolute()

    def plugin_conf(self) -> dict[str, Any]:
        """This plugin's entry in the conflist's `plugins`."""
        return {"type": self.type, **self.config}


def conflist(first: dict[str, Any], chained: list[dict[str, Any]]) -> dict[str, Any]:
    """The network config with the chained plugins' configs after the first one: {name,
    cniVersion, plugins: [first, *chained]}. Without a chain the single config stays as is."""
    if not chained:
        return first
    head = {k: v for k, v in first.items() if k not in CONFLIST_KEYS}
    return {"cniVersion": first.get("cniVersion"), "name": first.get("name"),
            "plugins": [head, *chained]}
