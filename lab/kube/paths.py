"""Where K3s's containerd looks for CNI plugins and configs on a node — read, never guessed.

K3s moved its CNI bin dir in the October 2024 releases (…/data/current/bin -> …/data/cni) and its
containerd config from format 2 (`[plugins."io.containerd.grpc.v1.cri".cni] bin_dir`) to format 3
(`[plugins.'io.containerd.cri.v1.runtime'.cni] bin_dir` or, containerd >= 2.1, `bin_dirs`). The
file K3s generates on the node says which; the lab config can override either directory.
"""
from __future__ import annotations

from dataclasses import dataclass

import tomllib

from lab.api import LabError, Node

CONTAINERD_CONFIG = "/var/lib/rancher/k3s/agent/etc/containerd/config.toml"
# containerd's own defaults, in force when the generated file has no cni section (older K3s
# omits it when flannel is disabled).
CONTAINERD_DEFAULT_BIN_DIR = "/opt/cni/bin"
CONTAINERD_DEFAULT_CONF_DIR = "/etc/cni/net.d"
DEFAULT_SNAPSHOTTER = "overlayfs"
_CRI_PLUGINS = ("io.containerd.cri.v1.runtime", "io.containerd.grpc.v1.cri", "cri")


@dataclass(frozen=True)
class CniDirs:
    bin_dirs: tuple[str, ...]   # where the runtime looks for plugin executables, in order
    conf_dir: str

    @property
    def bin_dir(self) -> str:
        """Where the harness installs plugins: the first directory the runtime searches."""
        return self.bin_dirs[0]

    @property
    def cni_path(self) -> str:
        return ":".join(self.bin_dirs)


def parse_containerd_config(text: str, *, source: str = CONTAINERD_CONFIG) -> CniDirs:
    """The CNI dirs a containerd config.toml (format 1, 2 or 3) tells the CRI plugin to use."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise LabError(f"cannot parse {source}: {e}",
                       hint="set k3s.cni_bin_dir and k3s.cni_conf_dir to skip reading it") from None
    plugins = doc.get("plugins", {})
    for name in _CRI_PLUGINS:
        cni = plugins.get(name, {}).get("cni") if isinstance(plugins.get(name), dict) else None
        if isinstance(cni, dict) and (cni.get("bin_dir") or cni.get("bin_dirs")
                                      or cni.get("conf_dir")):
            bin_dirs = cni.get("bin_dirs") or ([cni["bin_dir"]] if cni.get("bin_dir") else [])
            if not isinstance(bin_dirs, list) or not all(isinstance(d, str) for d in bin_dirs):
                raise LabError(f"{source}: plugins.{name}.cni.bin_dirs is not a list of paths")
            return CniDirs(bin_dirs=tuple(bin_dirs) or (CONTAINERD_DEFAULT_BIN_DIR,),
                           conf_dir=str(cni.get("conf_dir") or CONTAINERD_DEFAULT_CONF_DIR))
    return CniDirs(bin_dirs=(CONTAINERD_DEFAULT_BIN_DIR,), conf_dir=CONTAINERD_DEFAULT_CONF_DIR)


def parse_snapshotter(text: str) -> str:
    """The snapshotter the CRI plugin unpacks images into (K3s's --snapshotter), from a
    containerd config.toml of format 1, 2 or 3; containerd's default when it names none."""
    try:
        plugins = tomllib.loads(text).get("plugins", {})
    except tomllib.TOMLDecodeError:
        return DEFAULT_SNAPSHOTTER
    for name, table in (("io.containerd.cri.v1.images", None),
                        ("io.containerd.grpc.v1.cri", "containerd"), ("cri", "containerd")):
        section = plugins.get(name)
        if isinstance(section, dict) and table:
            section = section.get(table)
        if isinstance(section, dict) and isinstance(section.get("snapshotter"), str):
            return str(section["snapshotter"])
    return DEFAULT_SNAPSHOTTER


def resolve(text: str | None, bin_override: str | None, conf_override: str | None,
            *, where: str = "") -> CniDirs:
    """Overrides win; what they leave open comes from the containerd config text."""
    if bin_override and conf_override:
        return CniDirs(bin_dirs=(bin_override,), conf_dir=conf_override)
    if text is None:
        raise LabError(f"{CONTAINERD_CONFIG} is missing", where=where,
                       hint="K3s writes it when it starts: is K3s running on this node? Or set "
                            "k3s.cni_bin_dir and k3s.cni_conf_dir")
    found = parse_containerd_config(text)
    bin_dirs = (bin_override,) if bin_override else found.bin_dirs
    return CniDirs(bin_dirs=bin_dirs, conf_dir=conf_override or found.conf_dir)


def read_containerd_config(node: Node) -> str | None:
    """The node's generated containerd config.toml, or None when K3s has not written it."""
    result = node.run(["cat", CONTAINERD_CONFIG], timeout=30)
    return result.stdout if result.ok else None


def node_cni_dirs(node: Node, bin_override: str | None = None,
                  conf_override: str | None = None) -> CniDirs:
    """Reads the node's containerd config over Node.run (skipped when both are overridden)."""
    if bin_override and conf_override:
        return resolve(None, bin_override, conf_override, where=node.name)
    return resolve(read_containerd_config(node), bin_override, conf_override, where=node.name)
