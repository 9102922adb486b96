"""The K3s steps of `lab up`: the server, the agents joining it, nodes Ready, the kubeconfig
fetched to the harness (the air-gapped pod images: lab.kube.unpack_images)."""
from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lab.api import ActionContext, LabError, Node
from lab.config.k3s import K3sSettings, sized_for
from lab.kube import cmdlines, containerd_oom, kubeconfig, node_kind
from lab.kube.airgap import resolve_inputs
from lab.kube.kubeconfig import write_private
from lab.kube.remote import POLL, parallel, put_if_changed, sh, wait_until, write_file
from lab.nodes.ssh import CommandTimeout

TOKEN_FILE = "k3s-token"
_TOKEN_LOCK = threading.Lock()   # agents install in parallel; the token is made once




# --- the lab's K3s roles ----------------------------------------------------------------------

def k3s_settings(ctx: ActionContext) -> K3sSettings:
    settings: K3sSettings | None = ctx.config.k3s
    if settings is None:
        raise LabError("the lab config has no [k3s] section")
    return sized_for(settings, ctx.emulated)


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
        sh(node, cmdlines.install_binary_connected(settings.version, settings.arch, digest,
                                                   settings.download_base),
           timeout=600, what=f"cannot install K3s {settings.version}")
    for local in inputs.images:
        put_if_changed(node, local, f"{cmdlines.IMAGES_DIR}/{local.name}", 0o644)
    if settings.registry_mirror:
        refs = [inputs.pod_image, *([inputs.pause_image] if inputs.pause_image else [])]
        multus = getattr(ctx.config, "multus", None)
        if multus is not None and multus.mode == "daemonset":
            refs.append(multus.image_ref)
        write_file(node, cmdlines.REGISTRIES_PATH,
                   cmdlines.registries_yaml(settings.registry_mirror, refs))


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
    from lab.runtime.network import node_addresses

    others = tuple(ip for ip in node_addresses(ctx.config, node).values() if ip != node.address)
    extra = node_kind.extra_args(kind_of(node), settings.minor)
    return cmdlines.NodeFacts(node.name, node.address, iface,
                              resolve_inputs(ctx.config).pause_image, other_ips=others,
                              extra_args=tuple(extra))


def kind_of(node: Node) -> node_kind.NodeKind:
    """What the node is (systemd or not, cgroup v1, what root may do there), asked of it."""
    res = node.run(["sh", "-c", node_kind.probe()], timeout=30)
    if not res.ok:
        raise LabError("cannot tell what kind of node this is", where=node.name,
                       output=res.stderr or res.stdout)
    return node_kind.parse_probe(res.stdout)


def give_a_way_out(ctx: ActionContext, node: Node) -> None:
    """A node without a default route gets one on its lab interface, per family it uses
    (cmdlines.default_route_on says why K3s needs it and why nothing leaves the lab)."""
    from lab.runtime.network import node_addresses

    res = node.run(cmdlines.interface_of(node.address), timeout=30)
    iface = k3s_settings(ctx).flannel_iface or (cmdlines.parse_interface(res.stdout)
                                                 if res.ok else None)
    if iface is None:
        return          # node_facts names the missing interface where K3s needs it
    families = sorted(node_addresses(ctx.config, node))
    added = sh(node, cmdlines.default_route_on(iface, families), timeout=30,
               what="cannot add a default route on the lab interface").stdout.split()
    if added and ctx.report:
        ctx.report(f"{node.name}: no default route; {', '.join(added)} default via {iface} "
                   "(the lab network: nothing leaves it)")


def crash_loop(node: Node, role: str, limit: int = 2) -> LabError | None:
    """An error with the journal's tail when systemd keeps restarting K3s on node, else None:
    a unit that crashed twice will not come up by waiting longer."""
    systemd = kind_of(node).systemd
    res = node.run(cmdlines.restart_count(role) if systemd else node_kind.restart_count(role),
                   timeout=30)
    try:
        restarts = int(res.stdout.strip()) if res.ok else 0
    except ValueError:
        restarts = 0
    if restarts < limit:
        return None
    tail = node.run(cmdlines.journal_tail(role) if systemd else node_kind.log_tail(role),
                    timeout=30)
    return LabError(f"K3s {role} keeps restarting ({restarts} restarts)", where=node.name,
                    output=tail.stdout or tail.stderr,
                    hint=f"`lab exec {node.name} -- journalctl -u {cmdlines.SERVICE[role]}` "
                         f"(container nodes: {node_kind.log_path(role)}) shows "
                         "all of it; under TCG give K3s nodes 2 vCPUs and 2 GiB")


def start_k3s(ctx: ActionContext, node: Node, args: list[str]) -> None:
    role = args[0]
    inputs = resolve_inputs(ctx.config)
    kind = kind_of(node)
    minor = k3s_settings(ctx).minor
    if kind.oom_restricted:
        containerd_oom.before_start(node, minor)
    if not kind.systemd:    # a container node: K3s under a supervisor, as k3d runs it
        sh(node, node_kind.install_supervised(role),
           input=node_kind.supervisor_script(args, ctx.config.name), timeout=120,
           what=f"cannot start K3s {role}")
    elif inputs.install_script is not None:
        script = inputs.install_script
        node.put_file(script, cmdlines.INSTALL_SCRIPT_PATH, 0o755)
        sh(node, cmdlines.install_with_script(args, k3s_settings(ctx).version), timeout=300,
           what=f"K3s install.sh ({role}) failed")
    else:
        sh(node, cmdlines.install_unit(role), input=cmdlines.systemd_unit(args, ctx.config.name),
           timeout=300, what=f"cannot start K3s {role}")
    if kind.oom_restricted and pin_oom_setting(node, role, minor, kind.systemd) and ctx.report:
        ctx.report(f"{node.name}: containerd restricted to this root's oom_score_adj "
                   f"(K3s v1.{minor} renders no template to extend)")


def pin_oom_setting(node: Node, role: str, minor: int, systemd: bool) -> bool:
    """containerd_oom.after_start, except that a K3s which never rendered containerd's config
    because it keeps crashing is reported as that, with its log, not as a missing config."""
    try:
        return containerd_oom.after_start(node, role, minor, systemd)
    except LabError:
        looping = crash_loop(node, role)
        if looping is not None:
            raise looping from None
        raise


class InstallK3sServer:
    name = "install K3s server"

    def __init__(self, poll: float = POLL) -> None:
        self.poll = poll

    def run(self, ctx: ActionContext) -> None:
        settings = k3s_settings(ctx)
        server, _ = split_roles(ctx.config, ctx.nodes)
        adopt_server_token(ctx, server)
        install_k3s_files(ctx, server)
        give_a_way_out(ctx, server)
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
            hint=f"`lab exec {server.name} -- journalctl -u k3s` (container nodes: "
                 f"{node_kind.log_path('server')}) shows why"), self.poll)
        if ctx.report:
            ctx.report(f"K3s {settings.version} server on {server.name} ({server.address})")


class InstallK3sAgents:
    name = "install K3s agents"

    def run(self, ctx: ActionContext) -> None:
        settings = k3s_settings(ctx)
        server, agents = split_roles(ctx.config, ctx.nodes)

        def install(agent: Node) -> None:
            install_k3s_files(ctx, agent)
            give_a_way_out(ctx, agent)
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
                hint=f"`lab exec {first} -- journalctl -u {service}` (container nodes: "
                     f"/var/log/{service}.log) shows why")

        wait_until(check, settings.ready_timeout, fail, self.poll)


class FetchKubeconfig:
    name = "fetch the kubeconfig"

    def run(self, ctx: ActionContext) -> None:
        server, _ = split_roles(ctx.config, ctx.nodes)
        path = kubeconfig.fetch(server, ctx.state_dir, ctx.config.name)
        if ctx.report:
            ctx.report(f"kubeconfig: {path}")
