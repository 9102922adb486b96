"""lab.toml as a validating model: every mistake is reported with its dotted key and the fix.

    [lab]      name, provider, state_dir
    [[nodes]]  name, role
    [network]  underlay, pod_cidr (one /24 per node, in node order)
    [plugin]   path, type, backend, ifname, config (the CNI network config as a TOML table),
               node_setup, build, build_timeout; [[plugin.chain]] type, path, config: plugins
               chained after it (chain.py)
    [libvirt] [podman] [ssh] [existing] [vagrant] [k3s] [multus]: models owned by their
               providers

Unknown keys are errors (extra="forbid" everywhere): a typo must never be silently ignored.

Longer than 400 lines: the top-level model and the translation of pydantic's errors into one
line with the dotted key and the fix belong together; each section's own model is a module
beside this one.
"""
from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Iterator
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
from lab.config.chain import PLUGIN_TYPE_RE, ChainedPlugin
from lab.config.k3s import K3sSettings, MultusSettings
from lab.config.libvirt import LibvirtSettings
from lab.config.plugin_config import ifname_problem, placeholder_problem, value_problem
from lab.config.podman import PodmanSettings
from lab.config.remote import ExistingSettings, SshSettings, VagrantSettings

# The lab name is the separator-free part of every resource name ("cnilab-<lab>-<node>"):
# without '-' in it, "cnilab-a-b-node1" can only ever belong to lab "a", never to lab "a-b".
LAB_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_]{0,19}")
NODE_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?")
RESERVED_NODE_NAMES = ("sw",)        # the lab switch namespace is "cnilab-<lab>-sw"
RESERVED_NODE_PREFIX = "pod-"        # pod namespaces are "cnilab-<lab>-pod-*"
NODE_PREFIX = 24                     # each node gets one /24 of pod_cidr
FIRST_NODE_HOST = 10                 # node i gets the underlay's host number 11 + i (.11, .12, …)
Provider = Literal["netns", "libvirt", "podman", "existing", "vagrant"]
DEFAULT_CONFIG = Path("lab.toml")
CNILAB_MARK = b"# cnilab build"      # second line of every dist/cnilab (plugin/delivery/build.py)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LabSection(_Strict):
    name: str = "lab"
    provider: Provider = "netns"
    state_dir: Path | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not LAB_NAME_RE.fullmatch(v):
            raise ValueError(f"{v!r} is not a lab name: use 1-20 lowercase letters, digits or '_' "
                             "(no '-': it separates the lab name in resource names)")
        return v


class NodeSpec(_Strict):
    name: str
    role: Literal["server", "agent"] = "agent"

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NODE_NAME_RE.fullmatch(v):
            raise ValueError(f"{v!r} is not a node name: use lowercase letters, digits and '-' "
                             "(at most 32, starting and ending with a letter or digit)")
        if v in RESERVED_NODE_NAMES or v.startswith(RESERVED_NODE_PREFIX):
            raise ValueError(f"{v!r} is reserved by the lab (switch 'sw', pods 'pod-*'): "
                             "pick another node name")
        return v


IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address
NODE_PREFIX6 = 64                    # each node gets one /64 of a v6 pod_cidr
FIRST_NODE_HOST6 = 0x10              # v6 node i gets host ::11 + i, like .11 + i in v4


def _networks(value: str | list[str], key: str) -> list[str]:
    """One CIDR or a list of at most one per family (dual-stack), validated."""
    items = [value] if isinstance(value, str) else list(value)
    if not items:
        raise ValueError("give at least one network, e.g. \"10.244.0.0/16\"")
    seen: dict[int, str] = {}
    for item in items:
        try:
            net = ipaddress.ip_network(item, strict=True)
        except ValueError as e:
            raise ValueError(f"{item!r} is not a network in CIDR form ({e}); write it like "
                             "10.244.0.0/16 or fd00:244::/56") from None
        if net.version in seen:
            raise ValueError(f"{seen[net.version]} and {item} are both IPv{net.version}: give "
                             "at most one network per family (one v4, one v6)")
        seen[net.version] = item
    return items


class NetworkSection(_Strict):
    # A v4 network, a v6 one, or both (a list): the families the lab runs.
    underlay: str | list[str] = "10.99.0.0/24"
    pod_cidr: str | list[str] = "10.244.0.0/16"

    @field_validator("underlay", "pod_cidr")
    @classmethod
    def _cidr(cls, v: str | list[str]) -> str | list[str]:
        _networks(v, "")
        return v

    @staticmethod
    def _by_family(value: str | list[str]) -> dict[int, IPNet]:
        nets = (ipaddress.ip_network(v) for v in ([value] if isinstance(value, str) else value))
        return {net.version: net for net in sorted(nets, key=lambda n: n.version)}

    @property
    def underlay_nets(self) -> dict[int, IPNet]:
        return self._by_family(self.underlay)

    @property
    def pod_nets(self) -> dict[int, IPNet]:
        return self._by_family(self.pod_cidr)

    @property
    def underlay_net(self) -> IPNet:
        """The primary underlay: v4 when the lab has it, else v6."""
        return next(iter(self.underlay_nets.values()))

    @property
    def pod_net(self) -> IPNet:
        return next(iter(self.pod_nets.values()))

    @property
    def families(self) -> tuple[int, ...]:
        """The pod address families, v4 first (4,), (6,) or (4, 6)."""
        return tuple(self.pod_nets)


class PluginSection(_Strict):
    path: Path
    type: str | None = None
    # cnilab's cross-node datapath (its config's `backend`, default host-gw); only for ours
    backend: Literal["host-gw", "vxlan", "none"] | None = None
    ifname: str = "eth0"
    config: dict[str, Any] = Field(default_factory=dict)
    # Third-party plugins after the plugin under test, in order (one conflist; chain.py)
    chain: list[ChainedPlugin] = Field(default_factory=list)
    # An executable run as root on every node after the plugin is installed (every `lab up`,
    # so it must be safe to repeat), with NODE_NAME, NODE_IP, NODE_POD_SUBNET, POD_CIDR,
    # NODES and PEERS (JSON) and CNI_BIN_DIR in its environment: a plugin's per-node set-up.
    node_setup: Path | None = None
    # A shell command run on the harness, in the config's folder, before `lab up` and `lab
    # deploy` look at plugin.path: the plugin's own build (`go build -o …`), so a changed
    # source is what gets shipped. build_timeout: seconds it may take (a cold Go build
    # downloads modules and compiles the standard library: minutes on a small machine).
    build: str | None = None
    build_timeout: float = 900

    @field_validator("type")
    @classmethod
    def _type(cls, v: str | None) -> str | None:
        if v is not None and not PLUGIN_TYPE_RE.fullmatch(v):
            raise ValueError(f"{v[:80]!r} is not a plugin type: the file name of the plugin in "
                             "the CNI bin dir (letters, digits, '.', '_', '+', '-'; at most 64; "
                             "no '/'), e.g. cnilab or ptp")
        return v

    @model_validator(mode="after")
    def _type_from_path(self) -> PluginSection:
        if self.type is None and not PLUGIN_TYPE_RE.fullmatch(self.path.name):
            raise ValueError(f"the plugin's file name {self.path.name[:80]!r} cannot be its type "
                             "(letters, digits, '.', '_', '+', '-' only): set plugin.type")
        return self

    @field_validator("build")
    @classmethod
    def _build(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("is empty: give the shell command that builds plugin.path, e.g. "
                             "\"cd go-plugin && go build -o go-ptp .\", or leave it out")
        if v is not None and "\0" in v:
            raise ValueError("contains a NUL byte, which no shell command can")
        return v

    @field_validator("build_timeout")
    @classmethod
    def _build_timeout(cls, v: float) -> float:
        if not v > 0:
            raise ValueError(f"{v:g} is not a time the build can take: give seconds above 0, "
                             "e.g. 900")
        return v

    @model_validator(mode="after")
    def _timeout_needs_a_build(self) -> PluginSection:
        if "build_timeout" in self.model_fields_set and self.build is None:
            raise ValueError("build_timeout is set but build is not: add the build command, "
                             "or remove build_timeout")
        return self

    @field_validator("ifname")
    @classmethod
    def _ifname(cls, v: str) -> str:
        problem = ifname_problem(v)
        if problem:
            raise ValueError(f"{v!r} {problem}; e.g. eth0 or net1")
        return v

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
    podman: PodmanSettings | None = None
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
        for version, pod_net in self.network.pod_nets.items():
            per_node = NODE_PREFIX if version == 4 else NODE_PREFIX6
            example = "10.244.0.0/16" if version == 4 else "fd00:244::/56"
            if pod_net.prefixlen > per_node:
                raise ValueError(f"network.pod_cidr: {pod_net} is smaller than one /{per_node}; "
                                 f"each node needs a /{per_node}, use e.g. {example}")
            if 2 ** (per_node - pod_net.prefixlen) < len(self.nodes):
                raise ValueError(f"network.pod_cidr: {pod_net} holds fewer /{per_node}s than "
                                 f"the {len(self.nodes)} nodes; use a larger range")
        for version, underlay in self.network.underlay_nets.items():
            first = FIRST_NODE_HOST if version == 4 else FIRST_NODE_HOST6
            if underlay.num_addresses - 2 < first + len(self.nodes):
                raise ValueError(f"network.underlay: {underlay} is too small for "
                                 f"{len(self.nodes)} nodes from host {first + 1}; "
                                 "use a larger subnet, e.g. a /24 or a /64")
            same_family = self.network.pod_nets.get(version)
            if same_family is not None and underlay.overlaps(same_family):
                raise ValueError("network.pod_cidr: overlaps network.underlay; pick disjoint "
                                 "ranges")
        v6_pods_without_v6_underlay = (6 in self.network.pod_nets
                                       and 6 not in self.network.underlay_nets)
        if (v6_pods_without_v6_underlay and self.plugin_is_cnilab
                and (self.plugin.backend or "host-gw") == "host-gw"):
            raise ValueError("network.pod_cidr: IPv6 pods over host-gw need an IPv6 underlay "
                             "(each route goes via the peer's v6 address): add a v6 network to "
                             "network.underlay, or set plugin.backend = \"vxlan\" (it carries "
                             "v6 over the v4 underlay)")
        problem = value_problem(self.plugin.config) or placeholder_problem(
            self.plugin.config, tuple(self.network.underlay_nets), self.network.families,
            self.lab.provider)
        if problem:
            raise ValueError(problem)
        problem = self._chain_problem()
        if problem:
            raise ValueError(problem)
        if self.plugin.backend is not None and not self.plugin_is_cnilab:
            raise ValueError(f"plugin.backend is a setting of cnilab, not of "
                             f"{self.plugin.plugin_type}: remove it (a plugin's own options go "
                             "in [plugin.config])")
        if self.k3s is not None and self.lab.provider == "libvirt":
            self.libvirt = _sized_for_k3s(self.libvirt or LibvirtSettings())
        return self

    # -- derived facts everything else uses ------------------------------------------------------
    def _chain_problem(self) -> str:
        if self.plugin.chain and "plugins" in self.plugin.config:
            return ("plugin.config.plugins and [[plugin.chain]] both chain plugins: keep the "
                    "plugin under test in [plugin.config] and list the others as "
                    "[[plugin.chain]] entries")
        shipped: dict[str, Path] = {}
        for i, entry in enumerate(self.plugin.chain):
            if entry.path is not None and entry.type == self.plugin.plugin_type:
                return (f"plugin.chain[{i}].path: would be installed as {entry.type}, over the "
                        "plugin under test; leave path out to chain the same plugin again")
            if entry.path is not None and shipped.setdefault(entry.type, entry.path) \
                    != entry.path:
                return (f"plugin.chain[{i}].path: another entry ships a different "
                        f"{entry.type}; one file per type goes to the nodes")
            where = f"plugin.chain[{i}].config"
            problem = value_problem(entry.config) or placeholder_problem(
                entry.config, tuple(self.network.underlay_nets), self.network.families,
                self.lab.provider)
            if problem:
                return problem.replace("plugin.config", where, 1)
        return ""

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

    @property
    def plugin_is_cnilab(self) -> bool:
        """Whether the plugin under test is ours, whatever `type` it is installed as (our
        builds say so in their second line), or installed as type "cnilab"."""
        try:
            with self.plugin_path.open("rb") as f:
                lines = f.read(256).split(b"\n", 2)
        except OSError:
            lines = []
        marked = len(lines) > 1 and lines[1].startswith(CNILAB_MARK)
        return marked or self.plugin.plugin_type == "cnilab"

    def pod_subnets_by_family(self) -> dict[int, dict[str, IPNet]]:
        """family -> node name -> that node's pod subnet (a /24 in v4, a /64 in v6)."""
        found: dict[int, dict[str, IPNet]] = {}
        for version, net in self.network.pod_nets.items():
            subnets: Iterator[IPNet] = net.subnets(
                new_prefix=NODE_PREFIX if version == 4 else NODE_PREFIX6)
            found[version] = {node.name: subnet for node, subnet in zip(self.nodes, subnets)}
        return found

    def pod_subnets(self) -> dict[str, IPNet]:
        """Each node's pod subnet in the primary family (v4 when the lab has it)."""
        return next(iter(self.pod_subnets_by_family().values()))

    def underlay_addresses_by_family(self) -> dict[int, dict[str, IPAddr]]:
        """family -> node -> its address, for providers that choose them (netns, libvirt):
        .11, .12, … in v4 and ::11, ::12, … in v6."""
        found: dict[int, dict[str, IPAddr]] = {}
        for version, net in self.network.underlay_nets.items():
            first = FIRST_NODE_HOST if version == 4 else FIRST_NODE_HOST6
            found[version] = {node.name: net.network_address + first + 1 + i
                              for i, node in enumerate(self.nodes)}
        return found

    def underlay_addresses(self) -> dict[str, IPAddr]:
        """Node IPs in the primary underlay family (v4 when the lab has it)."""
        return next(iter(self.underlay_addresses_by_family().values()))

    def with_name(self, name: str | None) -> LabConfig:
        if not name:
            return self
        try:
            lab = LabSection.model_validate({**self.lab.model_dump(), "name": name})
        except ValidationError as e:
            why = str(e.errors()[0]["msg"]).removeprefix("Value error, ")
            raise LabError(f"--name: {why}", hint="e.g. --name lab2") from None
        return self.model_copy(update={"lab": lab})


# What a K3s node needs (seen under TCG: with 1 vCPU the server crash-loops, its
# cloud-controller-manager giving up on the API; 2 vCPUs and 2 GiB come up in ~2 minutes).
K3S_NODE_MINIMUM = {"vcpus": 2, "memory_mib": 2048, "disk_gib": 10}


def _sized_for_k3s(settings: LibvirtSettings) -> LibvirtSettings:
    """Defaults raised to what K3s needs; sizes the user set below that are refused."""
    chosen = settings.model_fields_set
    too_small = [f"libvirt.{key} = {getattr(settings, key)} (K3s needs at least {least})"
                 for key, least in K3S_NODE_MINIMUM.items()
                 if key in chosen and getattr(settings, key) < least]
    if too_small:
        raise ValueError("; ".join(too_small) + ": under TCG a 1-vCPU K3s server crash-loops "
                         "and 1 GiB is too tight; raise them or leave them out")
    raised = {key: least for key, least in K3S_NODE_MINIMUM.items() if key not in chosen}
    return settings.model_copy(update=raised)


def _dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


# pydantic names each member of a union in the error location ("network.underlay.str",
# "…list[str]"): a reader knows the key, not the validator's branches.
_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "bytes"}
_NOUNS = {"str": "a string", "list[str]": "a list of strings", "int": "an integer",
          "float": "a number", "bool": "true or false", "dict": "a table", "none": "nothing"}
_TYPE_ERRORS = {"string_type": "a string", "int_type": "an integer", "int_parsing": "an integer",
                "list_type": "a list", "dict_type": "a table", "bool_type": "true or false",
                "bool_parsing": "true or false", "path_type": "a path (a string)",
                "float_type": "a number", "float_parsing": "a number",
                "model_type": "a table", "model_attributes_type": "a table"}


def _is_tag(part: int | str) -> bool:
    return isinstance(part, str) and ("[" in part or part in _TYPE_TAGS)


def _fold_unions(errors: list[Any]) -> list[Any]:
    """One error per key: of a union's branches, the one the value's shape chose (the deepest
    location), else one "must be A or B" for all of them."""
    groups: dict[tuple[int | str, ...], list[Any]] = {}
    for item in errors:
        loc = tuple(item["loc"])
        cut = next((i for i, part in enumerate(loc) if _is_tag(part)), len(loc))
        groups.setdefault(loc[:cut], []).append({**item, "_tag": loc[cut] if cut < len(loc)
                                                 else None, "_rest": loc[cut + 1:]})
    folded = []
    for key, items in groups.items():
        tagged = [i for i in items if i["_tag"] is not None]
        if len(tagged) < 2:
            folded += [{**i, "loc": key + i["_rest"]} for i in items]
            continue
        deepest = max(len(i["_rest"]) for i in tagged)
        if deepest:
            folded += [{**i, "loc": key + i["_rest"]} for i in tagged
                       if len(i["_rest"]) == deepest]
            continue
        nouns = [_NOUNS.get(str(i["_tag"]), str(i["_tag"])) for i in tagged]
        folded.append({"loc": key, "type": "union",
                       "msg": f"must be {' or '.join(dict.fromkeys(nouns))}, got "
                              f"{tagged[0].get('input')!r}"})
    return folded


def _short(line: str, limit: int = 400) -> str:
    """A 10 kB value quoted in a message must not bury the message: its middle goes."""
    return line if len(line) <= limit else f"{line[:limit // 2]} … {line[-limit // 3:]}"


def _as_lab_error(err: ValidationError, source: str) -> LabError:
    lines = []
    for item in _fold_unions(err.errors()):
        loc = _dotted(tuple(item["loc"]))
        kind = item["type"]
        if kind in _TYPE_ERRORS:
            item = {**item, "msg": f"must be {_TYPE_ERRORS[kind]}, got {item.get('input')!r}"}
        elif kind == "literal_error":
            item = {**item, "msg": f"must be {(item.get('ctx') or {}).get('expected')}, "
                                   f"got {item.get('input')!r}"}
        if kind == "extra_forbidden":
            lines.append(f"{loc}: unknown key; " + _unknown_key_fix(tuple(item["loc"])))
        elif kind == "missing":
            lines.append(f"{loc}: missing (required)" + _missing_hint(loc))
        else:
            msg = str(item["msg"]).removeprefix("Value error, ")
            # model-level checks already name their key ("nodes: …"); field ones get it here.
            lines.append(msg if not loc else f"{loc}: {msg}")
    return LabError(f"invalid lab config {source}", output="\n".join(map(_short, lines)),
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
