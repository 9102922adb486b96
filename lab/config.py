"""lab.toml as a validating model: every mistake is reported with its dotted key and the fix.

    [lab]      name, provider, state_dir
    [[nodes]]  name, role
    [network]  underlay, pod_cidr (one /24 per node, in node order)
    [plugin]   path, type, backend, ifname, config (the CNI network config as a TOML table)
    [libvirt] [ssh] [existing] [vagrant] [k3s] [multus]: models owned by their providers

Unknown keys are errors (extra="forbid" everywhere): a typo must never be silently ignored.
"""
from __future__ import annotations

import difflib
import ipaddress
import re
from pathlib import Path
from typing import Any, Literal

import tomllib
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from lab.api import LabError
from lab.k3s.settings import K3sSettings, MultusSettings
from lab.providers.libvirt.settings import LibvirtSettings
from lab.providers.remote_settings import ExistingSettings, SshSettings, VagrantSettings

# The lab name is the separator-free part of every resource name ("cnilab-<lab>-<node>"):
# without '-' in it, "cnilab-a-b-node1" can only ever belong to lab "a", never to lab "a-b".
LAB_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_]{0,19}$")
NODE_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
RESERVED_NODE_NAMES = ("sw",)        # the lab switch namespace is "cnilab-<lab>-sw"
RESERVED_NODE_PREFIX = "pod-"        # pod namespaces are "cnilab-<lab>-pod-*"
NODE_PREFIX = 24                     # each node gets one /24 of pod_cidr
FIRST_NODE_HOST = 10                 # node i gets the underlay's host number 11 + i (.11, .12, …)
Provider = Literal["netns", "libvirt", "existing", "vagrant"]
DEFAULT_CONFIG = Path("lab.toml")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LabSection(_Strict):
    name: str = "lab"
    provider: Provider = "netns"
    state_dir: Path | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not LAB_NAME_RE.match(v):
            raise ValueError(f"{v!r} is not a lab name: use 1-20 lowercase letters, digits or '_' "
                             "(no '-': it separates the lab name in resource names)")
        return v


class NodeSpec(_Strict):
    name: str
    role: Literal["server", "agent"] = "agent"

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NODE_NAME_RE.match(v):
            raise ValueError(f"{v!r} is not a node name: use lowercase letters, digits and '-' "
                             "(at most 32, starting and ending with a letter or digit)")
        if v in RESERVED_NODE_NAMES or v.startswith(RESERVED_NODE_PREFIX):
            raise ValueError(f"{v!r} is reserved by the lab (switch 'sw', pods 'pod-*'): "
                             "pick another node name")
        return v


class NetworkSection(_Strict):
    underlay: str = "10.99.0.0/24"
    pod_cidr: str = "10.244.0.0/16"

    @field_validator("underlay", "pod_cidr")
    @classmethod
    def _cidr(cls, v: str) -> str:
        try:
            ipaddress.IPv4Network(v, strict=True)
        except ValueError as e:
            raise ValueError(f"{v!r} is not an IPv4 network in CIDR form ({e}); "
                             "write it like 10.244.0.0/16") from None
        return v

    @property
    def underlay_net(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.underlay)

    @property
    def pod_net(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.pod_cidr)


class PluginSection(_Strict):
    path: Path
    type: str | None = None
    backend: Literal["host-gw", "vxlan", "none"] = "host-gw"
    ifname: str = "eth0"
    config: dict[str, Any] = Field(default_factory=dict)

    @property
    def plugin_type(self) -> str:
        return self.type or self.path.name

    def resolved_path(self, base: Path) -> Path:
        """The executable: relative paths are tried from the working directory, then from
        the config file's directory (examples/ configs run from the repository root)."""
        if self.path.is_absolute() or self.path.exists():
            return self.path.absolute()
        return (base / self.path).absolute()


class LabConfig(_Strict):
    lab: LabSection = Field(default_factory=LabSection)
    nodes: list[NodeSpec]
    network: NetworkSection = Field(default_factory=NetworkSection)
    plugin: PluginSection
    libvirt: LibvirtSettings | None = None
    ssh: SshSettings | None = None
    existing: ExistingSettings | None = None
    vagrant: VagrantSettings | None = None
    k3s: K3sSettings | None = None
    multus: MultusSettings | None = None
    # Where the config was read from: relative paths in it are resolved against it.
    _source: Path | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _consistent(self) -> LabConfig:
        if not self.nodes:
            raise ValueError("nodes: at least one [[nodes]] entry is needed")
        seen: set[str] = set()
        for node in self.nodes:
            if node.name in seen:
                raise ValueError(f"nodes: node name {node.name!r} appears twice; "
                                 "give every [[nodes]] entry its own name")
            seen.add(node.name)
        pod_net = self.network.pod_net
        if pod_net.prefixlen > NODE_PREFIX:
            raise ValueError(f"network.pod_cidr: {pod_net} is smaller than one /{NODE_PREFIX}; "
                             "each node needs a /24, use e.g. 10.244.0.0/16")
        if 2 ** (NODE_PREFIX - pod_net.prefixlen) < len(self.nodes):
            raise ValueError(f"network.pod_cidr: {pod_net} holds fewer /24s than the "
                             f"{len(self.nodes)} nodes; use a larger range")
        hosts = self.network.underlay_net.num_addresses - 2
        if hosts < FIRST_NODE_HOST + len(self.nodes):
            raise ValueError(f"network.underlay: {self.network.underlay} is too small for "
                             f"{len(self.nodes)} nodes from .{FIRST_NODE_HOST + 1}; "
                             "use a larger subnet, e.g. a /24")
        if self.network.underlay_net.overlaps(pod_net):
            raise ValueError("network.pod_cidr: overlaps network.underlay; pick disjoint ranges")
        return self

    # -- derived facts everything else uses ------------------------------------------------------
    @property
    def source(self) -> Path | None:
        return self._source

    @property
    def name(self) -> str:
        return self.lab.name

    @property
    def harness_dir(self) -> Path:
        """Harness-side files of this lab (keys, kubeconfig, logs)."""
        if self.lab.state_dir is not None:
            return self.lab.state_dir.expanduser()
        return Path("~/.local/state/cnilab").expanduser() / self.lab.name

    @property
    def plugin_path(self) -> Path:
        base = self._source.parent if self._source else Path.cwd()
        return self.plugin.resolved_path(base)

    def pod_subnets(self) -> dict[str, ipaddress.IPv4Network]:
        subnets = self.network.pod_net.subnets(new_prefix=NODE_PREFIX)
        return {node.name: next(subnets) for node in self.nodes}

    def underlay_addresses(self) -> dict[str, ipaddress.IPv4Address]:
        """Node IPs for providers that choose them (netns, libvirt reservations)."""
        net = self.network.underlay_net
        return {node.name: net.network_address + FIRST_NODE_HOST + 1 + i
                for i, node in enumerate(self.nodes)}

    def with_name(self, name: str | None) -> LabConfig:
        if not name:
            return self
        try:
            lab = LabSection.model_validate({**self.lab.model_dump(), "name": name})
        except ValidationError as e:
            why = str(e.errors()[0]["msg"]).removeprefix("Value error, ")
            raise LabError(f"--name: {why}", hint="e.g. --name lab2") from None
        return self.model_copy(update={"lab": lab})


def _dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _as_lab_error(err: ValidationError, source: str) -> LabError:
    lines = []
    for item in err.errors():
        loc = _dotted(tuple(item["loc"]))
        kind = item["type"]
        if kind == "extra_forbidden":
            lines.append(f"{loc}: unknown key; " + _unknown_key_fix(tuple(item["loc"])))
        elif kind == "missing":
            lines.append(f"{loc}: missing (required)" + _missing_hint(loc))
        else:
            msg = str(item["msg"]).removeprefix("Value error, ")
            # model-level checks already name their key ("nodes: …"); field ones get it here.
            lines.append(msg if not loc else f"{loc}: {msg}")
    return LabError(f"invalid lab config {source}", output="\n".join(lines),
                    hint="fix the keys above; docs/lab.md describes every section")


def _unknown_key_fix(loc: tuple[int | str, ...]) -> str:
    """Suggests the key that was probably meant, from the model the key was found in."""
    model: Any = LabConfig
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        annotation = field.annotation if field else None
        model = next((a for a in (annotation, *getattr(annotation, "__args__", ()))
                      if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None:
            break
    known = sorted(model.model_fields) if model is not None else []
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    if close:
        return f"did you mean {close[0]!r}?"
    if known:
        return f"remove it; this section takes {', '.join(known)}"
    return "remove it (this section takes no keys yet)"


def _missing_hint(loc: str) -> str:
    hints = {
        "plugin": "; add a [plugin] section with path = \"dist/cnilab\"",
        "plugin.path": "; set it to the CNI plugin executable under test, e.g. dist/cnilab",
        "nodes": "; add [[nodes]] entries with a name each",
    }
    return hints.get(loc, "")


def parse_config(data: dict[str, Any], source: str = "<config>", name: str | None = None,
                 path: Path | None = None) -> LabConfig:
    try:
        config = LabConfig.model_validate(data)
    except ValidationError as e:
        raise _as_lab_error(e, source) from None
    if path is not None:
        config._source = path.absolute()
    return config.with_name(name)


def load_config(path: Path, name: str | None = None) -> LabConfig:
    """Reads and validates lab.toml; `name` overrides [lab] name (two labs from one file)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise LabError(f"no lab config at {path.absolute()}",
                       hint="pass one with -c/--config, or copy an example: "
                            "cp examples/netns-hostgw.toml lab.toml") from None
    except OSError as e:
        raise LabError(f"cannot read lab config {path}: {e.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise LabError(f"{path} is not valid TOML: {e}",
                       hint="check quoting and brackets near that line") from None
    return parse_config(data, str(path), name, path)
