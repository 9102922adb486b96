"""`lab up` after provisioning, when [k3s] is set: nodes -> K3s cluster -> Multus -> plugin + NAD.

Each action is idempotent (re-running `lab up` converges) and talks to nodes only through
`Node.run` / `Node.put_file`, as root. kubectl runs on the server node (K3s's own, with its admin
kubeconfig), so nothing here needs the kubernetes client or a route from the harness to the API.

    install K3s server      binary (download + checksum, or the air-gapped file), images, token,
                            unit or install.sh; waits for the API
    install K3s agents      the same on every other node, in parallel, joining the server
    [primary] deploy plugin the plugin + its conflist (nodes turn Ready only once it is there)
    wait for nodes Ready    timeout names the node(s) that did not come up and why
    [air-gapped] unpack     the pod and pause images into each node's snapshotter, in parallel
    fetch kubeconfig        <state_dir>/kubeconfig, 0600, server address rewritten
    install Multus          daemonset (thick/thin) or host mode; waits until ready
    deploy plugin           the plugin into each node's CNI bin dir + the NAD
"""
from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import json
import secrets
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.api import Action, ActionContext, CommandResult, LabError, NetworkSpec, Node
from lab.k3s import cmdlines, kubeconfig, multus, nad
from lab.k3s.airgap import pod_image_of, resolve_inputs
from lab.k3s.kubeconfig import write_private
from lab.k3s.paths import (
    CONTAINERD_CONFIG,
    CniDirs,
    node_cni_dirs,
    parse_snapshotter,
    read_containerd_config,
)
from lab.k3s.paths import resolve as resolve_cni_dirs
from lab.k3s.settings import K3sSettings, MultusSettings
from lab.ssh import CommandTimeout

TOKEN_FILE = "k3s-token"
_TOKEN_LOCK = threading.Lock()   # agents install in parallel; the token is made once
POLL = 2.0


# --- small helpers over Node ----------------------------------------------------------------

def sh(node: Node, script: str, *, input: str | bytes | None = None, timeout: float = 120,
       what: str = "", shared: bool = False) -> CommandResult:
    """Runs a root shell snippet on a node; raises a LabError naming the node when it fails.
    shared: over the SSH connection later `lab` processes reuse (lab.ssh), where there is one."""
    run = getattr(node, "run_shared", node.run) if shared else node.run
    result = run(["sh", "-c", script], input=input, timeout=timeout)
    if not result.ok:
        raise LabError(what or f"command failed (rc={result.rc})", where=node.name,
                       output=(result.stderr or result.stdout))
    return result


def write_file(node: Node, path: str, content: str, mode: int = 0o644) -> None:
    """Writes content atomically; content travels on stdin, never on a command line."""
    directory = path.rsplit("/", 1)[0] or "/"
    target, tmp = shlex.quote(path), shlex.quote(path + ".cnilab-tmp")
    script = (f"set -e; umask 077; install -d -m 0755 {shlex.quote(directory)}; "
              f"cat > {tmp}; chmod {mode:o} {tmp}; mv -f {tmp} {target}")
    sh(node, script, input=content, what=f"cannot write {path}")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def put_if_changed(node: Node, local: Path, remote: str, mode: int = 0o755) -> bool:
    """Copies only when the node's file differs (image tarballs are hundreds of MB)."""
    if node.run(["sh", "-c", cmdlines.binary_matches(sha256_of(local), remote)]).ok:
        return False
    node.put_file(local, remote, mode)
    return True


def kubectl(server: Node, *args: str, input: str | None = None, timeout: float = 120,
            what: str = "") -> CommandResult:
    result = server.run(cmdlines.kubectl(*args), input=input, timeout=timeout)
    if not result.ok:
        raise LabError(what or f"kubectl {' '.join(args[:3])} failed", where=server.name,
                       output=result.stderr or result.stdout)
    return result


def apply(server: Node, manifests: Sequence[dict[str, Any]], what: str) -> None:
    """`kubectl apply` of a List: one call, idempotent, nothing written to disk."""
    doc = {"apiVersion": "v1", "kind": "List", "items": list(manifests)}
    kubectl(server, "apply", "-f", "-", input=json.dumps(doc), what=f"cannot apply {what}")


def wait_until(check: Callable[[], str | None], timeout: float, describe: Callable[[str], LabError],
               poll: float = POLL) -> None:
    """Polls check() until it returns None; its last answer (what is missing) goes in the error.

    A probe that outlives its own timeout is a "not yet", not the end: under TCG a busy server
    can take longer than that to answer one kubectl, and the deadline is what says too late.
    The last sleep ends at the deadline, so the last answer is fresh."""
    deadline = time.monotonic() + timeout
    while True:
        started = time.monotonic()
        try:
            missing = check()
        except CommandTimeout as e:
            missing = f"a probe did not answer in time ({e.what})"
        if missing is None:
            return
        now = time.monotonic()
        if now >= deadline:
            raise describe(missing)
        # A probe is a kubectl on the node being waited for: one that took long is CPU the
        # starved node needs for itself, so probes take at most a third of its time.
        time.sleep(min(max(poll, 2 * (now - started)), max(deadline - now, 0.0)))


def parallel(nodes: Sequence[Node], fn: Callable[[Node], None]) -> None:
    """Runs fn on every node at once; raises one error naming every node that failed."""
    if not nodes:
        return
    with ThreadPoolExecutor(max_workers=min(8, len(nodes))) as pool:
        futures = {node.name: pool.submit(fn, node) for node in nodes}
    errors = [(name, f.exception()) for name, f in futures.items() if f.exception()]
    if len(errors) == 1:
        raise errors[0][1]  # type: ignore[misc]
    if errors:
        raise LabError(f"{len(errors)} nodes failed: {', '.join(n for n, _ in errors)}",
                       output="\n\n".join(str(e) for _, e in errors))


# --- the lab's K3s roles ----------------------------------------------------------------------

def k3s_settings(ctx: ActionContext) -> K3sSettings:
    settings: K3sSettings | None = ctx.config.k3s
    if settings is None:
        raise LabError("the lab config has no [k3s] section")
    return settings


def split_roles(config: Any, nodes: Sequence[Node]) -> tuple[Node, list[Node]]:
    """The server (first [[nodes]] with role = "server", else the first node) and the agents."""
    if not nodes:
        raise LabError("the lab has no nodes", hint="run `lab up` first")
    by_name = {n.name: n for n in nodes}
    servers = [spec.name for spec in getattr(config, "nodes", [])
               if getattr(spec, "role", "") == "server" and spec.name in by_name]
    server = by_name[servers[0]] if servers else nodes[0]
    if len(servers) > 1:
        raise LabError(f"nodes {', '.join(servers)} all have role = \"server\"",
                       hint="the harness runs one K3s server; make the others agents")
    return server, [n for n in nodes if n is not server]


def local_input(config: Any, path: Path, key: str) -> Path:
    """A harness-side input, relative to the config file's folder like plugin.path."""
    source = getattr(config, "source", None)
    resolved = path if path.is_absolute() or path.exists() or source is None \
        else source.parent / path
    if not resolved.is_file():
        raise LabError(f"{key}: no such file {resolved}",
                       hint="air-gapped runners need the K3s release files on the harness: "
                            "see docs/k8s.md")
    return resolved


def token_path(ctx: ActionContext) -> Path:
    settings = k3s_settings(ctx)
    if settings.token_file is not None:
        return local_input(ctx.config, settings.token_file, "k3s.token_file")
    path = ctx.state_dir / TOKEN_FILE
    with _TOKEN_LOCK:
        if not path.exists():
            write_private(path, secrets.token_hex(32) + "\n")
    return path


def adopt_server_token(ctx: ActionContext, server: Node) -> None:
    """A server that already runs keeps its token: copy it back when the harness lost its own
    (a fresh checkout, another runner), so agents can still join. Read over stdin/stdout only."""
    settings = k3s_settings(ctx)
    path = ctx.state_dir / TOKEN_FILE
    if settings.token_file is not None or path.exists():
        return
    res = server.run(["cat", cmdlines.NODE_TOKEN_PATH], timeout=30)
    if res.ok and res.stdout.strip():
        with _TOKEN_LOCK:
            write_private(path, res.stdout.strip() + "\n")


def remove_k3s(nodes: Sequence[Node]) -> None:
    """Uninstalls K3s from nodes the lab installed it on (for `lab down` on existing nodes;
    VMs are simply deleted)."""
    def uninstall(node: Node) -> None:
        sh(node, cmdlines.uninstall(), timeout=300, what="cannot remove K3s")

    parallel(nodes, uninstall)


# --- K3s --------------------------------------------------------------------------------------

def install_k3s_files(ctx: ActionContext, node: Node) -> None:
    """Binary, images and token on one node; nothing is started yet."""
    settings = k3s_settings(ctx)
    inputs = resolve_inputs(ctx.config)
    sh(node, cmdlines.prepare_dirs(), what="cannot create K3s directories")
    node.put_file(token_path(ctx), cmdlines.NODE_TOKEN_PATH, 0o600)
    if inputs.binary is not None:
        put_if_changed(node, inputs.binary, cmdlines.K3S_BIN, 0o755)
    else:
        digest = settings.expected_sha256
        assert digest is not None  # K3sSettings refuses connected mode without one
        sh(node, cmdlines.install_binary_connected(settings.version, settings.arch, digest),
           timeout=600, what=f"cannot install K3s {settings.version}")
    for local in inputs.images:
        put_if_changed(node, local, f"{cmdlines.IMAGES_DIR}/{local.name}", 0o644)


def node_facts(ctx: ActionContext, node: Node) -> cmdlines.NodeFacts:
    """The node's lab interface (read on it unless the config names it) and the sandbox
    image, for its command line."""
    settings = k3s_settings(ctx)
    iface = settings.flannel_iface
    if iface is None and not settings.primary:
        res = node.run(cmdlines.interface_of(node.address), timeout=30)
        iface = cmdlines.parse_interface(res.stdout) if res.ok else None
        if iface is None:
            raise LabError(f"no interface holds the node address {node.address}",
                           where=node.name, output=res.stderr or res.stdout,
                           hint="set k3s.flannel_iface to the lab network's interface")
    from lab.network import node_addresses

    others = tuple(ip for ip in node_addresses(ctx.config, node).values() if ip != node.address)
    return cmdlines.NodeFacts(node.name, node.address, iface,
                              resolve_inputs(ctx.config).pause_image, other_ips=others)


def crash_loop(node: Node, role: str, limit: int = 2) -> LabError | None:
    """An error with the journal's tail when systemd keeps restarting K3s on node, else None:
    a unit that crashed twice will not come up by waiting longer."""
    res = node.run(cmdlines.restart_count(role), timeout=30)
    try:
        restarts = int(res.stdout.strip()) if res.ok else 0
    except ValueError:
        restarts = 0
    if restarts < limit:
        return None
    tail = node.run(cmdlines.journal_tail(role), timeout=30)
    return LabError(f"K3s {role} keeps restarting ({restarts} restarts)", where=node.name,
                    output=tail.stdout or tail.stderr,
                    hint=f"`lab exec {node.name} -- journalctl -u {cmdlines.SERVICE[role]}` shows "
                         "all of it; under TCG give K3s nodes 2 vCPUs and 2 GiB")


def start_k3s(ctx: ActionContext, node: Node, args: list[str]) -> None:
    role = args[0]
    inputs = resolve_inputs(ctx.config)
    if inputs.install_script is not None:
        script = inputs.install_script
        node.put_file(script, cmdlines.INSTALL_SCRIPT_PATH, 0o755)
        sh(node, cmdlines.install_with_script(args, k3s_settings(ctx).version), timeout=300,
           what=f"K3s install.sh ({role}) failed")
    else:
        sh(node, cmdlines.install_unit(role), input=cmdlines.systemd_unit(args, ctx.config.name),
           timeout=300, what=f"cannot start K3s {role}")


class InstallK3sServer:
    name = "install K3s server"

    def __init__(self, poll: float = POLL) -> None:
        self.poll = poll

    def run(self, ctx: ActionContext) -> None:
        settings = k3s_settings(ctx)
        server, _ = split_roles(ctx.config, ctx.nodes)
        adopt_server_token(ctx, server)
        install_k3s_files(ctx, server)
        cidrs = [str(net) for net in ctx.config.network.pod_nets.values()]
        start_k3s(ctx, server, cmdlines.server_args(settings, node_facts(ctx, server), cidrs))

        def api_ready() -> str | None:
            res = server.run(cmdlines.kubectl("get", "--raw=/readyz"), timeout=30)
            if res.ok:
                return None
            looping = crash_loop(server, "server")
            if looping:
                raise looping
            return (res.stderr or res.stdout).strip()[-500:]

        wait_until(api_ready, settings.ready_timeout, lambda why: LabError(
            f"the K3s API did not answer within {settings.ready_timeout:.0f}s",
            where=server.name, output=why,
            hint=f"`lab exec {server.name} -- journalctl -u k3s` shows why"), self.poll)
        if ctx.report:
            ctx.report(f"K3s {settings.version} server on {server.name} ({server.address})")


class InstallK3sAgents:
    name = "install K3s agents"

    def run(self, ctx: ActionContext) -> None:
        settings = k3s_settings(ctx)
        server, agents = split_roles(ctx.config, ctx.nodes)

        def install(agent: Node) -> None:
            install_k3s_files(ctx, agent)
            start_k3s(ctx, agent, cmdlines.agent_args(settings, node_facts(ctx, agent),
                                                       server.address))

        parallel(agents, install)
        if ctx.report and agents:
            ctx.report(f"{len(agents)} agents joined {server.name}")


def not_ready(nodes_json: str, expected: Sequence[str]) -> dict[str, str]:
    """node name -> why it is not Ready (missing, or its Ready condition's reason)."""
    try:
        items = json.loads(nodes_json).get("items", [])
    except (ValueError, AttributeError):
        return {name: "kubectl returned no node list" for name in expected}
    status: dict[str, str] = {}
    for item in items:
        name = item.get("metadata", {}).get("name", "")
        conditions = {c.get("type"): c for c in item.get("status", {}).get("conditions", [])}
        ready = conditions.get("Ready", {})
        if ready.get("status") != "True":
            status[name] = f"{ready.get('reason', 'NotReady')}: {ready.get('message', '')}".strip()
        else:
            status[name] = ""
    return {name: status.get(name, "not registered with the server") for name in expected
            if status.get(name) != ""}


class WaitNodesReady:
    name = "wait for every node to be Ready"

    def __init__(self, poll: float = POLL) -> None:
        self.poll = poll

    def run(self, ctx: ActionContext) -> None:
        settings = k3s_settings(ctx)
        server, _ = split_roles(ctx.config, ctx.nodes)
        names = [n.name for n in ctx.nodes]
        last: dict[str, str] = {}

        def check() -> str | None:
            last.clear()
            try:
                res = server.run(cmdlines.nodes_json(), timeout=30)
            except CommandTimeout as e:   # a starved server: not yet, and the error says so
                last[server.name] = f"the API did not answer: {e.what}"
                return ", ".join(last)
            last.update(not_ready(res.stdout if res.ok else "", names))
            for node in ctx.nodes:
                if node.name in last or not res.ok:
                    looping = crash_loop(node, "server" if node is server else "agent")
                    if looping:
                        raise looping
            return None if not last else ", ".join(last)

        def fail(_: str) -> LabError:
            first = next(iter(last))
            service = "k3s" if first == server.name else "k3s-agent"
            return LabError(
                f"node(s) {', '.join(last)} not Ready after {settings.ready_timeout:.0f}s",
                where=first, output="\n".join(f"{n}: {why}" for n, why in last.items()),
                hint=f"`lab exec {first} -- journalctl -u {service}` shows why")

        wait_until(check, settings.ready_timeout, fail, self.poll)


class UnpackPodImages:
    """Air-gapped images arrive as tarballs that K3s imports but does not unpack: the first pod
    on each node then waits for the unpack (60-190 s for the scenario image under TCG). Done
    here, on every node at once, the first scenario pod starts as fast as the next."""
    name = "unpack the pod images on every node"

    def run(self, ctx: ActionContext) -> None:
        settings = k3s_settings(ctx)
        pod_image, policy = pod_image_of(ctx.config)
        # ref -> whether it must be there already: a pod image that may be pulled (from a
        # registry mirror the nodes reach) is pulled, and unpacked, at its first use.
        refs = {pod_image: policy == "Never"}
        pause = resolve_inputs(ctx.config).pause_image
        if pause:   # set only when its tarball is among the inputs
            refs = {pause: True, **refs}
        skipped: set[str] = set()

        def unpack(node: Node) -> None:
            snapshotter = parse_snapshotter(read_containerd_config(node) or "")
            for ref, required in refs.items():
                try:
                    res = node.run(["sh", "-c", cmdlines.unpack_image(ref, snapshotter)],
                                   timeout=settings.ready_timeout)
                except CommandTimeout:
                    raise LabError(f"unpacking {ref} took over {settings.ready_timeout:.0f}s",
                                   where=node.name) from None
                if res.rc == 3 and not required:
                    skipped.add(ref)
                elif res.rc == 3:
                    raise LabError(f"image {ref} is not on {node.name}", where=node.name,
                                   output=res.stderr.strip(),
                                   hint="its tarball must be in the air-gap folder or "
                                        "k3s.images (`lab image pod -o <folder>` makes it)")
                elif not res.ok:
                    raise LabError(f"cannot unpack {ref}", where=node.name,
                                   output=(res.stderr or res.stdout).strip())

        parallel(ctx.nodes, unpack)
        if ctx.report:
            done = [ref for ref in refs if ref not in skipped]
            ctx.report(f"{', '.join(done) or 'nothing'} unpacked on {len(ctx.nodes)} nodes"
                       + (f"; {', '.join(sorted(skipped))} not imported: pulled at first use"
                          if skipped else ""))


class FetchKubeconfig:
    name = "fetch the kubeconfig"

    def run(self, ctx: ActionContext) -> None:
        server, _ = split_roles(ctx.config, ctx.nodes)
        path = kubeconfig.fetch(server, ctx.state_dir, ctx.config.name)
        if ctx.report:
            ctx.report(f"kubeconfig: {path}")


# --- Multus -----------------------------------------------------------------------------------

def cluster_cni_dirs(ctx: ActionContext, nodes: Sequence[Node] | None = None,
                     poll: float = POLL) -> dict[str, CniDirs]:
    """Each node's CNI dirs, read from its containerd config (waits for K3s to write it)."""
    settings = k3s_settings(ctx)
    found: dict[str, CniDirs] = {}

    def read(node: Node) -> None:
        errors: list[str] = []

        def check() -> str | None:
            try:
                found[node.name] = node_cni_dirs(node, settings.cni_bin_dir,
                                                 settings.cni_conf_dir)
                return None
            except LabError as e:
                errors[:] = [e.describe()]
                return e.what

        wait_until(check, min(settings.ready_timeout, 120),
                   lambda _: LabError("cannot tell where K3s keeps CNI plugins",
                                      where=node.name, output="\n".join(errors),
                                      hint="set k3s.cni_bin_dir and k3s.cni_conf_dir"), poll)

    parallel(list(nodes if nodes is not None else ctx.nodes), read)
    return found


def same_dirs(dirs: dict[str, CniDirs]) -> CniDirs:
    """A daemonset has one hostPath: every node must agree."""
    distinct = set(dirs.values())
    if len(distinct) != 1:
        raise LabError("nodes disagree on the CNI directories",
                       output="\n".join(f"{n}: bin {d.bin_dir}, conf {d.conf_dir}"
                                        for n, d in dirs.items()),
                       hint="run the same K3s release everywhere, or set k3s.cni_bin_dir / "
                            "k3s.cni_conf_dir")
    return distinct.pop()


class InstallMultus:
    name = "install Multus"

    def __init__(self, poll: float = POLL) -> None:
        self.poll = poll

    def run(self, ctx: ActionContext) -> None:
        settings: MultusSettings = ctx.config.multus
        server, _ = split_roles(ctx.config, ctx.nodes)
        dirs_by_node = cluster_cni_dirs(ctx, poll=self.poll)
        dirs = same_dirs(dirs_by_node)
        apply(server, multus.cluster_manifests(settings, dirs), f"Multus {settings.mode}")
        if settings.mode == "host":
            self._host_mode(ctx, server, settings, dirs_by_node)
        self._wait_ready(server, settings)
        if ctx.report:
            ctx.report(f"Multus {settings.version} ({settings.mode}"
                       f"{', ' + settings.flavor if settings.mode == 'daemonset' else ''})")

    def _host_mode(self, ctx: ActionContext, server: Node, settings: MultusSettings,
                   dirs_by_node: dict[str, CniDirs]) -> None:
        binary = resolve_inputs(ctx.config).multus_binary
        assert binary is not None   # resolve_inputs refuses host mode without one
        token: dict[str, str] = {}

        def secret_filled() -> str | None:
            res = server.run(cmdlines.kubectl(
                "-n", multus.NAMESPACE, "get", "secret", multus.TOKEN_SECRET, "-o", "json"))
            try:
                data = json.loads(res.stdout).get("data") or {} if res.ok else {}
            except (ValueError, AttributeError):
                data = {}
            if data.get("token") and data.get("ca.crt"):
                token.update(data)
                return None
            return "token not filled in yet"

        wait_until(secret_filled, settings.ready_timeout, lambda why: LabError(
            f"service account token for Multus: {why}", where=server.name), self.poll)
        import base64
        kube = multus.host_kubeconfig(cmdlines.server_url(server.address), token["ca.crt"],
                                      base64.b64decode(token["token"]).decode())

        def place(node: Node) -> None:
            dirs = dirs_by_node[node.name]
            put_if_changed(node, binary, f"{dirs.bin_dir}/multus", 0o755)
            write_file(node, multus.kubeconfig_path(dirs), kube, 0o600)
            master = self._master_config(node, dirs, settings.ready_timeout)
            write_file(node, f"{dirs.conf_dir}/{multus.MULTUS_CONF}",
                       json.dumps(multus.host_config(master, dirs), indent=2), 0o644)

        parallel(ctx.nodes, place)

    def _master_config(self, node: Node, dirs: CniDirs, timeout: float) -> dict[str, Any]:
        """The cluster network's config on the node (K3s writes flannel's once it runs)."""
        found: dict[str, Any] = {}

        def check() -> str | None:
            listing = node.run(["ls", "-1", dirs.conf_dir])
            name = multus.pick_master_config(listing.stdout.split()) if listing.ok else None
            if name is None:
                return f"no cluster network config in {dirs.conf_dir}"
            text = node.run(["cat", f"{dirs.conf_dir}/{name}"])
            try:
                found.update(json.loads(text.stdout))
            except ValueError:
                return f"{name} is not JSON"
            return None

        wait_until(check, timeout, lambda why: LabError(
            f"Multus host mode: {why}", where=node.name,
            hint="the cluster network (flannel, or the plugin in primary mode) must write its "
                 "config first"), self.poll)
        return found

    def _wait_ready(self, server: Node, settings: MultusSettings) -> None:
        # Polled, not one `kubectl wait`: a starved API server answers one long request with
        # "Timeout" while the CRD is still on its way; only the deadline says too late.
        def established() -> str | None:
            res = server.run(cmdlines.kubectl(
                "get", f"crd/{multus.CRD_NAME}",
                "-o", "jsonpath={.status.conditions[?(@.type==\"Established\")].status}"),
                timeout=30)
            if res.ok and res.stdout.strip() == "True":
                return None
            return (res.stderr or res.stdout).strip()[-500:] or "not established yet"

        wait_until(established, settings.ready_timeout, lambda why: LabError(
            f"the NAD CRD is not established after {settings.ready_timeout:.0f}s",
            where=server.name, output=why), self.poll)
        if settings.mode == "daemonset":
            kubectl(server, "-n", multus.NAMESPACE, "rollout", "status",
                    f"daemonset/{multus.DAEMONSET}", f"--timeout={int(settings.ready_timeout)}s",
                    timeout=settings.ready_timeout + 30,
                    what=f"Multus daemonset not ready within {settings.ready_timeout:.0f}s "
                         f"(image {settings.image_ref})")


# --- the plugin under test --------------------------------------------------------------------

def pod_ifname(config: Any) -> str:
    """eth0 when the plugin is the cluster network; Multus's secondary name otherwise."""
    if config.k3s is not None and config.k3s.primary:
        return "eth0"
    wanted = str(getattr(config.plugin, "ifname", "") or "")
    return wanted if wanted and wanted != "eth0" else "net1"


def kube_network_spec(config: Any, nodes: Sequence[Node],
                      dirs: dict[str, CniDirs]) -> NetworkSpec:
    """The lab's NetworkSpec as K3s nodes see it: K3s's CNI_PATH, the pod-side interface."""
    from lab.network import network_spec

    spec = network_spec(config, nodes)
    paths = {name: d.cni_path for name, d in dirs.items()}
    first = nodes[0].name
    return dataclasses.replace(spec, ifname=pod_ifname(config),
                               cni_path=paths.get(first, spec.cni_path), cni_paths=paths)


def namespace_manifest(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "cnilab"}}}


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
        from lab.k3s import nad_rest

        with contextlib.suppress(nad_rest.Unanswered):   # the client below answers then
            return nad_rest.update_nad(path, manifests[-1])
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError as TransportError

        from lab.k3s.kubeapi import KubeApi

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
    from lab.actions import plugin_executable
    from lab.network import network_spec

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


def cluster_actions(config: Any) -> list[Action]:
    """The ordered K3s actions for a lab config with [k3s] (lab.actions calls this)."""
    settings: K3sSettings = config.k3s
    actions: list[Action] = [InstallK3sServer(), InstallK3sAgents()]
    if settings.primary:
        actions.append(DeployPlugin(primary=True))
    actions.append(WaitNodesReady())
    if settings.mode == "airgap":
        actions.append(UnpackPodImages())
    actions.append(FetchKubeconfig())
    if config.multus is not None:
        actions.append(InstallMultus())
    if not settings.primary:
        if config.multus is None:
            raise LabError("[k3s] without [multus] and primary = false leaves the plugin no way "
                           "into pods", hint="add a [multus] section, or set k3s.primary = true")
        actions.append(DeployPlugin(primary=False))
    return actions
