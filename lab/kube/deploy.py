"""The plugin into each node's CNI bin dir (whole, or an xdelta3 delta of the last deploy) and
its NAD or conflist: `lab up`'s last step and `lab deploy`'s whole job."""
from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import json
import shlex
import shutil
import subprocess
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.api import ActionContext, LabError, NetworkSpec, Node
from lab.config.k3s import K3sSettings
from lab.kube import cmdlines, kubeconfig, nad
from lab.kube.k3s_install import split_roles
from lab.kube.kubeconfig import write_private
from lab.kube.multus_install import (
    cluster_cni_dirs,
    kube_network_spec,
    namespace_manifest,
    pod_ifname,
)
from lab.kube.paths import (
    CONTAINERD_CONFIG,
    CniDirs,
)
from lab.kube.paths import resolve as resolve_cni_dirs
from lab.kube.remote import POLL, apply, parallel, sh

STAGE_DIR = "/var/lib/cnilab-stage"   # the upload lands here; a copy in the bin dir is renamed


@dataclass(frozen=True)
class PluginPayload:
    """The plugin under test, read once: what is sent (gzip: a third of the bytes over a slow
    link; or, against the copy the last deploy left, an xdelta3 delta: a few KiB) and what
    must be on the node afterwards."""

    name: str
    sha256: str
    packed: bytes
    delta: bytes | None = None      # new from base, when the harness has the base and xdelta3
    base_sha256: str = ""

    @classmethod
    def of(cls, path: Path, base: Path | None = None) -> PluginPayload:
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        # level 6: a seventh fewer bytes than level 1 for 0.1 s here, less time on the wire
        packed = gzip.compress(data, 6)
        if base is None or not base.is_file() or shutil.which("xdelta3") is None:
            return cls(path.name, digest, packed)
        done = subprocess.run(["xdelta3", "-e", "-c", "-s", str(base), str(path)],
                              capture_output=True, timeout=60, check=False)
        if done.returncode != 0 or len(done.stdout) >= len(packed):
            return cls(path.name, digest, packed)
        return cls(path.name, digest, packed, done.stdout,
                   hashlib.sha256(base.read_bytes()).hexdigest())

    @property
    def staged(self) -> str:
        return f"{STAGE_DIR}/{self.sha256[:16]}"


NEED_FULL = "cnilab: need the whole plugin"


def stage_plugin(payload: PluginPayload, base: str | None = None) -> str:
    """sh: puts the new plugin at the staging path unless the same bytes are staged already:
    unpacked from gzip on stdin, or with `base` rebuilt from the xdelta3 delta on stdin when
    base is the file the delta was made against (else it says NEED_FULL and stages nothing)."""
    staged = shlex.quote(payload.staged)
    script = (f"set -e; install -d -m 0700 {STAGE_DIR}; "
              f"if ! {cmdlines.binary_matches(payload.sha256, payload.staged)}; then ")
    if base is None:
        return script + f"gunzip > {staged}.tmp; mv -f {staged}.tmp {staged}; fi"
    b = shlex.quote(base)
    return script + (
        f"if command -v xdelta3 >/dev/null && "
        f"{cmdlines.binary_matches(payload.base_sha256, base)}; then "
        f"xdelta3 -d -c -s {b} > {staged}.tmp; "
        f"if {cmdlines.binary_matches(payload.sha256, payload.staged + '.tmp')}; then "
        f"mv -f {staged}.tmp {staged}; else rm -f {staged}.tmp; echo {shlex.quote(NEED_FULL)}; fi; "
        f"else echo {shlex.quote(NEED_FULL)}; fi; fi")


def install_in_place(payload: PluginPayload, target: str, delta: bool) -> str:
    """sh: the plugin straight into target (where the last deploy put it), its bytes on stdin:
    an xdelta3 delta against the file there when delta, else gzip. One checksum on the node
    (a fifth of a second on a TCG guest): of the file made, or, when the harness knows the
    plugin did not change, of the file there. Says unchanged, replaced, or NEED_FULL when the
    file there is not the one the delta was made against (xdelta3 checks its output)."""
    t, tmp = shlex.quote(target), shlex.quote(target + ".cnilab-tmp")
    need_full = f"echo {shlex.quote(NEED_FULL)}"
    if delta and payload.sha256 == payload.base_sha256:
        return (f"if {cmdlines.binary_matches(payload.sha256, target)}; then echo unchanged; "
                f"else {need_full}; fi")
    if delta:
        made = f"command -v xdelta3 >/dev/null && xdelta3 -d -c -s {t} > {tmp} 2>/dev/null"
    else:
        made = (f"install -d -m 0755 {shlex.quote(target.rsplit('/', 1)[0] or '/')} && "
                f"gunzip > {tmp}")
    install = (f"if {made} && {cmdlines.binary_matches(payload.sha256, target + '.cnilab-tmp')}; "
               f"then chmod 0755 {tmp} && mv -f {tmp} {t} && echo replaced; "
               f"else rm -f {tmp}; {need_full}; fi")
    if delta:
        return install
    return (f"if {cmdlines.binary_matches(payload.sha256, target)}; then echo unchanged; "
            f"else {install}; fi")


def install_staged(payload: PluginPayload, target: str, conflist: str | None) -> str:
    """sh: puts the staged plugin in place (atomically, kept when unchanged), writes the
    conflist from stdin when given, and says what it did."""
    t, staged = shlex.quote(target), shlex.quote(payload.staged)
    parent = shlex.quote(target.rsplit("/", 1)[0] or "/")
    script = (f"set -e; install -d -m 0755 {parent}; "
              f"if {cmdlines.binary_matches(payload.sha256, target)}; then "
              f"echo unchanged; else mv -f {staged} {t}.cnilab-tmp; chmod 0755 {t}.cnilab-tmp; "
              f"mv -f {t}.cnilab-tmp {t}; echo replaced; fi; rm -f {staged}")
    if conflist is not None:
        c = shlex.quote(conflist)
        conf_dir = shlex.quote(conflist.rsplit("/", 1)[0] or "/")
        script += (f"; install -d -m 0755 {conf_dir}; cat > {c}.cnilab-tmp; "
                   f"chmod 0644 {c}.cnilab-tmp; mv -f {c}.cnilab-tmp {c}")
    return script


def apply_nad(config: Any, server: Node, manifests: list[dict[str, Any]]) -> str:
    """The NAD through the API from the harness (one GET when unchanged); through kubectl on
    the server when the harness has no kubeconfig or cannot reach the API."""
    path = kubeconfig.state_path(config.harness_dir)
    if path.is_file():
        from lab.kube import nad_rest

        with contextlib.suppress(nad_rest.Unanswered):   # the client below answers then
            return nad_rest.update_nad(path, manifests[-1])
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError as TransportError

        from lab.kube.kubeapi import KubeApi

        api = KubeApi(path, timeout=5, retry_for=15)   # kubectl below if it stays away
        try:
            return api.apply_nad(manifests[-1])
        except (TransportError, OSError, LabError):
            pass           # no route to the API from here: the server's kubectl below
        except ApiException as e:
            raise LabError(f"the API refused the NetworkAttachmentDefinition ({e.status} "
                           f"{e.reason})", output=str(e.body or "")) from None
        finally:
            api.close()
    apply(server, manifests, "the NetworkAttachmentDefinition")
    return "applied"


INSTALL_MARK = "--- cnilab: installed ---"
DIRS_FILE = "cni-dirs.json"   # harness side: each node's CNI dirs as the last deploy found them
DEPLOYED_COPY = "deployed"    # harness side: the plugin the last deploy put on every node


def read_remembered_dirs(config: Any) -> dict[str, CniDirs]:
    """A guess only: every deploy still reads the node's containerd config and installs
    again when it says otherwise."""
    try:
        doc = json.loads((config.harness_dir / DIRS_FILE).read_text())
        return {name: CniDirs(tuple(d["bin_dirs"]), d["conf_dir"]) for name, d in doc.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def remember_dirs(config: Any, dirs: dict[str, CniDirs]) -> None:
    doc = {name: {"bin_dirs": list(d.bin_dirs), "conf_dir": d.conf_dir}
           for name, d in dirs.items()}
    with contextlib.suppress(OSError):     # a read-only harness dir only costs the next deploy
        write_private(config.harness_dir / DIRS_FILE, json.dumps(doc) + "\n")


def support_plugins(conf: dict[str, Any]) -> list[str]:
    """The other plugins a cluster network needs in the runtime's bin dir: loopback (every
    pod's lo) and each IPAM plugin the config delegates to."""
    listed = conf.get("plugins")
    plugins: list[Any] = listed if isinstance(listed, list) else [conf]
    names = ["loopback"]
    for plugin in plugins:
        ipam = plugin.get("ipam") if isinstance(plugin, dict) else None
        if isinstance(ipam, dict) and isinstance(ipam.get("type"), str):
            names.append(ipam["type"])
    return list(dict.fromkeys(names))


def deploy_plugin(config: Any, nodes: Sequence[Node], report: Callable[[str], None] | None = None,
                  *, poll: float = POLL, apply_nad_too: bool = True) -> NetworkSpec:
    """Plugin into every node's CNI bin dir, then the NAD (or, primary, each node's conflist).

    This is all `lab deploy` does: the inner loop after a plugin change. Per node, in
    parallel: one command stages the packed plugin and reads the containerd config, a second
    swaps the plugin in. The NAD goes through the API at the same time.
    """
    from lab.nodes.providers import plugin_executable
    from lab.runtime.network import network_spec

    settings: K3sSettings = config.k3s
    ctx = ActionContext(config=config, nodes=list(nodes), state_dir=Path("."))
    deployed = config.harness_dir / DEPLOYED_COPY / config.plugin.plugin_type
    payload = PluginPayload.of(plugin_executable(config), deployed)
    plugin_type = config.plugin.plugin_type
    server, _ = split_roles(config, nodes)
    nad_spec = dataclasses.replace(network_spec(config, nodes), ifname=pod_ifname(config))
    outcome: dict[str, str] = {}
    dirs: dict[str, CniDirs] = {}
    support = support_plugins(next(iter(nad_spec.configs.values())))

    def install_script(node: Node, found: CniDirs) -> tuple[str, str | None]:
        conflist = None
        if settings.primary:
            spec = kube_network_spec(config, nodes, {node.name: found})
            conflist = json.dumps(nad.primary_conflist(spec.configs[node.name]), indent=2)
        conf_path = f"{found.conf_dir}/{nad.primary_conflist_name(nad_spec)}" \
            if conflist is not None else None
        script = install_staged(payload, f"{found.bin_dir}/{plugin_type}", conf_path)
        if settings.primary:
            script = f"{cmdlines.link_support_plugins(found.bin_dir, support)}; {script}"
        return script, conflist

    def found_dirs(node: Node, containerd_config: str) -> CniDirs:
        if containerd_config.strip() or (settings.cni_bin_dir and settings.cni_conf_dir):
            return resolve_cni_dirs(containerd_config or None, settings.cni_bin_dir,
                                    settings.cni_conf_dir, where=node.name)
        # K3s has not written it yet (primary mode, agent just started): wait for it
        return cluster_cni_dirs(ctx, [node], poll=poll)[node.name]

    def redeploy(node: Node, guess: CniDirs) -> bool:
        # A session costs a sudo and a shell on the node (most of a second on a busy TCG
        # guest), so one session reads the containerd config and puts the plugin where the
        # last deploy found the CNI dirs; True when they are still the ones it found.
        target = f"{guess.bin_dir}/{plugin_type}"
        delta = payload.delta is not None
        done = sh(node, f"cat {CONTAINERD_CONFIG} 2>/dev/null || true; "
                        f"echo {shlex.quote(INSTALL_MARK)}; "
                        f"{install_in_place(payload, target, delta)}",
                  input=payload.delta if delta else payload.packed,
                  what=f"cannot install {payload.name} in {guess.bin_dir}", shared=True)
        text, _, installed = done.stdout.partition(INSTALL_MARK + "\n")
        found = dirs[node.name] = found_dirs(node, text)
        if found != guess:
            return False
        if NEED_FULL in installed:   # the node's copy is not the delta's base: all of it
            installed = sh(node, install_in_place(payload, target, False), input=payload.packed,
                           what=f"cannot install {payload.name} in {guess.bin_dir}",
                           shared=True).stdout
        if NEED_FULL in installed:
            raise LabError(f"{payload.name} did not arrive whole in {guess.bin_dir}",
                           where=node.name, hint="check the node's disk, then `lab deploy` again")
        outcome[node.name] = installed.split()[0] if installed.split() else "?"
        return True

    def place(node: Node) -> None:
        guess = remembered.get(node.name)
        if guess is not None and not settings.primary and redeploy(node, guess):
            return
        # First deploy, new CNI dirs, or primary mode: stage, read the config, install.
        staged = sh(node, f"{stage_plugin(payload)}; cat {CONTAINERD_CONFIG} 2>/dev/null "
                          "|| true", input=payload.packed, what=f"cannot upload {payload.name}",
                    shared=True)
        found = dirs[node.name] = found_dirs(node, staged.stdout)
        script, conflist = install_script(node, found)
        res = sh(node, script, input=conflist,
                 what=f"cannot install {payload.name} in {found.bin_dir}", shared=True)
        outcome[node.name] = res.stdout.strip().splitlines()[0] if res.stdout.strip() else "?"

    remembered = read_remembered_dirs(config)
    with ThreadPoolExecutor(max_workers=1) as nad_pool:
        nad_done = None
        if not settings.primary and apply_nad_too:
            manifests = [namespace_manifest(settings.namespace),
                         nad.nad_manifest(nad_spec, settings.namespace)]
            nad_done = nad_pool.submit(apply_nad, config, server, manifests)
        parallel(nodes, place)
        nad_state = nad_done.result() if nad_done is not None else ""
    remember_dirs(config, dirs)
    with contextlib.suppress(OSError):     # the next deploy's delta base: what is there now
        deployed.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(plugin_executable(config), deployed)
    if report:
        replaced = sum(1 for v in outcome.values() if v == "replaced")
        target = "conflist" if settings.primary else \
            f"NAD {settings.namespace}/{nad_spec.name} {nad_state}"
        report(f"{payload.name} (sha256 {payload.sha256[:12]}) -> {len(nodes)} nodes as "
               f"{plugin_type}, {replaced} replaced; {target}")
    return kube_network_spec(config, nodes, dirs)


class DeployPlugin:
    def __init__(self, primary: bool, poll: float = POLL) -> None:
        self.primary, self.poll = primary, poll
        self.name = ("deploy the plugin as the cluster network" if primary
                     else "deploy the plugin and its NetworkAttachmentDefinition")

    def run(self, ctx: ActionContext) -> None:
        # Primary mode runs before nodes are Ready; the API is up (the server waited for it).
        deploy_plugin(ctx.config, ctx.nodes, ctx.report, poll=self.poll)
