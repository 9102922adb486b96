"""`lab up` after provisioning, when [k3s] is set: nodes -> K3s cluster -> Multus -> plugin + NAD.

Each action is idempotent (re-running `lab up` converges) and talks to nodes only through
`Node.run` / `Node.put_file`, as root. kubectl runs on the server node (K3s's own, with its admin
kubeconfig), so nothing here needs the kubernetes client or a route from the harness to the API.

    install K3s server      binary (download + checksum, or the air-gapped file), images, token,
                            unit or install.sh; waits for the API
    install K3s agents      the same on every other node, in parallel, joining the server
    [primary] deploy plugin the plugin + its conflist (nodes turn Ready only once it is there)
    wait for nodes Ready    timeout names the node(s) that did not come up and why
    fetch kubeconfig        <state_dir>/kubeconfig, 0600, server address rewritten
    install Multus          daemonset (thick/thin) or host mode; waits until ready
    deploy plugin           the plugin into each node's CNI bin dir + the NAD
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
import shlex
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lab.api import Action, ActionContext, CommandResult, LabError, NetworkSpec, Node
from lab.k3s import commands, kubeconfig, multus, nad
from lab.k3s.kubeconfig import write_private
from lab.k3s.paths import CniDirs, node_cni_dirs
from lab.k3s.settings import K3sSettings, MultusSettings

TOKEN_FILE = "k3s-token"
_TOKEN_LOCK = threading.Lock()   # agents install in parallel; the token is made once
POLL = 2.0


# --- small helpers over Node ----------------------------------------------------------------

def sh(node: Node, script: str, *, input: str | None = None, timeout: float = 120,
       what: str = "") -> CommandResult:
    """Runs a root shell snippet on a node; raises a LabError naming the node when it fails."""
    result = node.run(["sh", "-c", script], input=input, timeout=timeout)
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
    if node.run(["sh", "-c", commands.binary_matches(sha256_of(local), remote)]).ok:
        return False
    node.put_file(local, remote, mode)
    return True


def kubectl(server: Node, *args: str, input: str | None = None, timeout: float = 120,
            what: str = "") -> CommandResult:
    result = server.run(commands.kubectl(*args), input=input, timeout=timeout)
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
    """Polls check() until it returns None; its last answer (what is missing) goes in the error."""
    deadline = time.monotonic() + timeout
    while True:
        missing = check()
        if missing is None:
            return
        if time.monotonic() >= deadline:
            raise describe(missing)
        time.sleep(poll)


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
    res = server.run(["cat", commands.NODE_TOKEN_PATH], timeout=30)
    if res.ok and res.stdout.strip():
        with _TOKEN_LOCK:
            write_private(path, res.stdout.strip() + "\n")


def remove_k3s(nodes: Sequence[Node]) -> None:
    """Uninstalls K3s from nodes the lab installed it on (for `lab down` on existing nodes;
    VMs are simply deleted)."""
    def uninstall(node: Node) -> None:
        sh(node, commands.uninstall(), timeout=300, what="cannot remove K3s")

    parallel(nodes, uninstall)


# --- K3s --------------------------------------------------------------------------------------

def install_k3s_files(ctx: ActionContext, node: Node) -> None:
    """Binary, images and token on one node; nothing is started yet."""
    settings = k3s_settings(ctx)
    sh(node, commands.prepare_dirs(), what="cannot create K3s directories")
    node.put_file(token_path(ctx), commands.NODE_TOKEN_PATH, 0o600)
    if settings.mode == "airgap":
        assert settings.binary is not None
        put_if_changed(node, local_input(ctx.config, settings.binary, "k3s.binary"),
                       commands.K3S_BIN, 0o755)
    else:
        digest = settings.expected_sha256
        assert digest is not None  # K3sSettings refuses connected mode without one
        sh(node, commands.install_binary_connected(settings.version, settings.arch, digest),
           timeout=600, what=f"cannot install K3s {settings.version}")
    for image in settings.images:
        local = local_input(ctx.config, image, "k3s.images")
        put_if_changed(node, local, f"{commands.IMAGES_DIR}/{local.name}", 0o644)


def start_k3s(ctx: ActionContext, node: Node, args: list[str]) -> None:
    settings = k3s_settings(ctx)
    role = args[0]
    if settings.install_script is not None:
        script = local_input(ctx.config, settings.install_script, "k3s.install_script")
        node.put_file(script, commands.INSTALL_SCRIPT_PATH, 0o755)
        sh(node, commands.install_with_script(args, settings.version), timeout=300,
           what=f"K3s install.sh ({role}) failed")
    else:
        sh(node, commands.install_unit(role), input=commands.systemd_unit(args, ctx.config.name),
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
        start_k3s(ctx, server, commands.server_args(settings, server.name, server.address))

        def api_ready() -> str | None:
            res = server.run(commands.kubectl("get", "--raw=/readyz"), timeout=30)
            return None if res.ok else (res.stderr or res.stdout).strip()[-500:]

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
            start_k3s(ctx, agent, commands.agent_args(settings, agent.name, agent.address,
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
            res = server.run(commands.nodes_json(), timeout=30)
            last.clear()
            last.update(not_ready(res.stdout if res.ok else "", names))
            return None if not last else ", ".join(last)

        def fail(_: str) -> LabError:
            first = next(iter(last))
            service = "k3s" if first == server.name else "k3s-agent"
            return LabError(
                f"node(s) {', '.join(last)} not Ready after {settings.ready_timeout:.0f}s",
                where=first, output="\n".join(f"{n}: {why}" for n, why in last.items()),
                hint=f"`lab exec {first} -- journalctl -u {service}` shows why")

        wait_until(check, settings.ready_timeout, fail, self.poll)


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
        assert settings.binary is not None
        binary = local_input(ctx.config, settings.binary, "multus.binary")
        token: dict[str, str] = {}

        def secret_filled() -> str | None:
            res = server.run(commands.kubectl(
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
        kube = multus.host_kubeconfig(commands.server_url(server.address), token["ca.crt"],
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
        kubectl(server, "wait", "--for=condition=established", f"crd/{multus.CRD_NAME}",
                f"--timeout={int(settings.ready_timeout)}s",
                timeout=settings.ready_timeout + 30, what="the NAD CRD is not established")
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


def deploy_plugin(config: Any, nodes: Sequence[Node], report: Callable[[str], None] | None = None,
                  *, poll: float = POLL, apply_nad: bool = True) -> NetworkSpec:
    """Plugin into every node's CNI bin dir, then the NAD (or, primary, each node's conflist).

    This is all `lab deploy` does: the inner loop after a plugin change.
    """
    settings: K3sSettings = config.k3s
    ctx = ActionContext(config=config, nodes=list(nodes), state_dir=Path("."))
    local = config.plugin_path
    if not local.is_file():
        raise LabError(f"plugin.path: no plugin executable at {local}",
                       hint="build ours with `python -m plugin.build` (-> dist/cnilab)")
    dirs = cluster_cni_dirs(ctx, poll=poll)
    spec = kube_network_spec(config, nodes, dirs)

    def place(node: Node) -> None:
        node.put_file(local, f"{dirs[node.name].bin_dir}/{spec.plugin_type}", 0o755)
        if settings.primary:
            conflist = nad.primary_conflist(spec.configs[node.name])
            write_file(node, f"{dirs[node.name].conf_dir}/{nad.primary_conflist_name(spec)}",
                       json.dumps(conflist, indent=2), 0o644)

    parallel(nodes, place)
    if not settings.primary and apply_nad:
        server, _ = split_roles(config, nodes)
        manifests = [namespace_manifest(settings.namespace),
                     nad.nad_manifest(spec, settings.namespace)]
        apply(server, manifests, "the NetworkAttachmentDefinition")
    if report:
        target = "conflist" if settings.primary else f"NAD {settings.namespace}/{spec.name}"
        report(f"{local.name} -> {len(nodes)} nodes as {spec.plugin_type}; {target}")
    return spec


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
    actions += [WaitNodesReady(), FetchKubeconfig()]
    if config.multus is not None:
        actions.append(InstallMultus())
    if not settings.primary:
        if config.multus is None:
            raise LabError("[k3s] without [multus] and primary = false leaves the plugin no way "
                           "into pods", hint="add a [multus] section, or set k3s.primary = true")
        actions.append(DeployPlugin(primary=False))
    return actions
