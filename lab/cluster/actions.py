"""`lab up`: provision the nodes, then an ordered list of small idempotent actions sharing one
ActionContext (install the plugin under test, then K3s + Multus when the config asks for them).
On failure the logs are collected, then the lab is removed unless --retain (kind's shape)."""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lab.api import Action, ActionContext, LabError, Node, Provider
from lab.cluster.build import build_plugin
from lab.cluster.chain import InstallChainedPlugins, chained_executables
from lab.config import LabConfig
from lab.config.k3s import EMULATED_WAIT_FACTOR
from lab.nodes.private import private_dir
from lab.nodes.providers import make_provider, plugin_dir, plugin_executable, provider_emulates
from lab.progress import Progress, Silent
from lab.runtime.cni_runtime import RUNTIME_PATH

LOGS_SUBDIR = "logs"   # kept by `lab down`: failure logs outlive the lab they explain


def preflight(config: LabConfig) -> None:
    """What can be checked before a node exists: the plugin file, the network config it will
    get, and (K3s) every air-gapped input; so a mistake costs seconds, not a VM boot."""
    from lab.runtime.network import base_config

    plugin_executable(config)
    chained_executables(config)
    node_setup_script(config)
    base_config(config)
    if config.k3s is not None:
        from lab.kube.airgap import check_binary_version, resolve_inputs

        inputs = resolve_inputs(config)
        if inputs.binary is not None:
            check_binary_version(inputs.binary, config.k3s.version)


class InstallPlugin:
    """Puts the plugin under test on every node as <plugin dir>/<type>, where CNI_PATH finds it."""

    name = "install the plugin under test"

    def run(self, ctx: ActionContext) -> None:
        config: LabConfig = ctx.config
        local = plugin_executable(config)
        plugin_type = config.plugin.plugin_type

        def install(node: Node) -> None:
            bin_dir = plugin_dir(config.lab.provider, node)
            node.put_file(local, f"{bin_dir}/{plugin_type}")

        # SSH copies are slow one by one; threads are plenty for a handful of uploads.
        with ThreadPoolExecutor(max_workers=min(8, len(ctx.nodes) or 1)) as pool:
            list(pool.map(install, ctx.nodes))
        if ctx.report:
            ctx.report(f"{local.name} -> {len(ctx.nodes)} nodes as {plugin_type}")


class RunNodeSetup:
    """plugin.node_setup on every node, as a step of its own: its output and time show."""

    def __init__(self, script: Path) -> None:
        self.script = script
        self.name = f"run plugin.node_setup {script.name} on every node"

    def run(self, ctx: ActionContext) -> None:
        config: LabConfig = ctx.config

        def setup(node: Node) -> None:
            run_node_setup(config, ctx.nodes, node, self.script,
                           plugin_dir(config.lab.provider, node))

        with ThreadPoolExecutor(max_workers=min(8, len(ctx.nodes) or 1)) as pool:
            list(pool.map(setup, ctx.nodes))
        if ctx.report:
            ctx.report(f"{self.script.name} ran on {', '.join(n.name for n in ctx.nodes)}")


def node_setup_actions(config: LabConfig) -> list[Action]:
    script = node_setup_script(config)
    return [] if script is None else [RunNodeSetup(script)]


def node_setup_script(config: LabConfig) -> Path | None:
    if config.plugin.node_setup is None:
        return None
    base = config.source.parent if config.source else Path.cwd()
    script = config.plugin.node_setup
    script = script if script.is_absolute() or script.exists() else base / script
    if not script.is_file() or not os.access(script, os.X_OK):
        raise LabError(f"plugin.node_setup: {script} is not an executable file",
                       hint=f"chmod +x {script}, or fix the path")
    return script


def run_node_setup(config: LabConfig, nodes: Sequence[Node], node: Node, script: Path,
                   bin_dir: str) -> None:
    """The plugin's own per-node set-up, with what the harness knows of the node."""
    from lab.runtime.network import node_variables

    words, lists = node_variables(config, nodes, node)
    remote = f"{bin_dir}/.cnilab-node-setup"
    node.put_file(script, remote, 0o755)
    env = {**words, **{k: json.dumps(v) for k, v in lists.items()}, "CNI_BIN_DIR": bin_dir}
    res = node.run([remote], env=env, timeout=300)
    if not res.ok:
        raise LabError(f"plugin.node_setup {script.name} failed (rc={res.rc})", where=node.name,
                       output=res.stderr or res.stdout)


class CheckPluginVersion:
    """Asks the installed plugin VERSION on a node and refuses a cniVersion it cannot serve:
    otherwise `lab up` says "up" and every ADD fails (reference ptp has no 1.1.0)."""

    name = "ask the plugin which CNI versions it serves"

    def run(self, ctx: ActionContext) -> None:
        from lab.runtime.network import base_config

        config: LabConfig = ctx.config
        wanted = str(base_config(config).get("cniVersion", ""))
        node = ctx.nodes[0]
        plugin = f"{plugin_dir(config.lab.provider, node)}/{config.plugin.plugin_type}"
        res = node.run([plugin], input=json.dumps({"cniVersion": wanted}),
                       env={"CNI_COMMAND": "VERSION", "CNI_PATH": os.path.dirname(plugin)},
                       timeout=60)
        try:
            supported = [str(v) for v in json.loads(res.stdout)["supportedVersions"]]
        except (ValueError, KeyError, TypeError):
            raise LabError(f"the plugin gave no VERSION answer (rc={res.rc})", where=node.name,
                           output=(res.stdout + res.stderr)[-2000:],
                           hint="a CNI plugin prints {\"supportedVersions\": [...]} for "
                                "CNI_COMMAND=VERSION") from None
        if wanted not in supported:
            raise LabError(f"{config.plugin.plugin_type} does not serve cniVersion {wanted} "
                           f"(it serves {', '.join(supported)})", where=node.name,
                           hint=f"set cniVersion = \"{supported[-1]}\" in [plugin.config]")
        if ctx.report:
            ctx.report(f"{config.plugin.plugin_type} serves cniVersion {wanted}")


IDENTITY_FILE = "cnilab-lab.json"   # in each node's state dir: which config made the lab
# Recorded for `lab ls` and the messages, not compared: one config may move or be copied.
IDENTITY_NOTES = ("source", "harness_dir")


def lab_identity(config: LabConfig) -> dict[str, object]:
    """What makes a lab this lab: a second `lab up` under the same name with other values
    here would stack a second address, plugin or datapath on the first lab's nodes (host-gw
    routes beside a vxlan device). The plugin config is the one the nodes get, defaults filled
    in, so a changed backend, MTU or IPAM range counts."""
    from lab.runtime.network import base_config

    identity = {"provider": config.lab.provider,
                "nodes": [[n.name, n.role] for n in config.nodes],
                "underlay": config.network.underlay, "pod_cidr": config.network.pod_cidr,
                "plugin_type": config.plugin.plugin_type, "ifname": config.plugin.ifname,
                "plugin_config": base_config(config), "k3s": config.k3s is not None,
                "source": str(config.source or ""), "harness_dir": str(config.harness_dir)}
    normal: dict[str, object] = json.loads(json.dumps(identity, default=str))   # as read back
    return normal


def identity_differences(theirs: dict[str, object], ours: dict[str, object]) -> list[str]:
    """`key: up X, this config Y` for every compared value that differs (dotted inside the
    plugin config, so the line names the one setting)."""
    def flat(value: object, prefix: str) -> dict[str, object]:
        if isinstance(value, dict) and value:
            return {k: v for key, item in value.items()
                    for k, v in flat(item, f"{prefix}.{key}").items()}
        return {prefix: value}

    lines = []
    for key in ours:
        # a key the lab's record lacks was not recorded when it was made: not a difference
        if key in IDENTITY_NOTES or key not in theirs or theirs[key] == ours[key]:
            continue
        up, mine = flat(theirs.get(key), key), flat(ours[key], key)
        for dotted in sorted(set(up) | set(mine)):
            if up.get(dotted) != mine.get(dotted):
                lines.append(f"{dotted}: up {up.get(dotted)!r}, this config {mine.get(dotted)!r}")
    return lines


def recorded_identity(nodes: Sequence[Node]) -> dict[str, object] | None:
    """The identity the lab's first node holds; None when it has none (made before
    identities were recorded, half made, or not answering)."""
    if not nodes:
        return None
    node = nodes[0]
    try:
        res = node.run(["cat", f"{node.state_dir}/{IDENTITY_FILE}"], timeout=30)
        theirs = json.loads(res.stdout) if res.ok else None
    except (LabError, ValueError):
        return None
    return theirs if isinstance(theirs, dict) else None


def refuse_a_foreign_lab(config: LabConfig, nodes: Sequence[Node], *,
                         hint: str | None = None) -> None:
    """The nodes of a lab of this name, if any, came from this config (or one that says the
    same): `lab up` before provisioning, the pytest plugin at session start."""
    theirs = recorded_identity(nodes)
    if theirs is None:
        return      # converge
    differs = identity_differences(theirs, lab_identity(config))
    if differs:
        keys = sorted({line.split(":")[0].split(".")[0] for line in differs})
        made_by = theirs.get("source") or "<that config>"
        raise LabError(
            f"lab {config.name} is already up from another config "
            f"({theirs.get('source') or 'unknown'}): {', '.join(keys)} differ",
            output="\n".join(differs),
            hint=hint or (f"`lab down --name {config.name} -c {made_by}` first, or bring "
                          "this one up under another --name"))


class RecordIdentity:
    name = "record which config made the lab"

    def run(self, ctx: ActionContext) -> None:
        text = json.dumps(lab_identity(ctx.config), indent=2)

        # and beside the harness's files: `lab ls` and `lab down --all` find the config there
        (ctx.state_dir / IDENTITY_FILE).write_text(text)

        def record(node: Node) -> None:
            path = f"{node.state_dir}/{IDENTITY_FILE}"
            node.run(["sh", "-c", 'mkdir -p "$(dirname "$1")" && cat > "$1"', "sh", path],
                     input=text, timeout=30).check(node.name)

        with ThreadPoolExecutor(max_workers=min(8, len(ctx.nodes) or 1)) as pool:
            list(pool.map(record, ctx.nodes))


def build_actions(config: LabConfig, report: object = None) -> list[Action]:
    actions: list[Action] = [RecordIdentity(), InstallPlugin(), *node_setup_actions(config),
                             CheckPluginVersion()]
    if config.plugin.chain:
        actions.append(InstallChainedPlugins())
    if config.k3s is not None:
        try:   # the K3s work; loaded only when the config asks for K3s
            k3s_actions = importlib.import_module("lab.kube.actions")
        except ModuleNotFoundError as e:
            if e.name != "lab.kube.actions":
                raise
            if callable(report):
                report("[k3s] is set but this install has no K3s actions: skipping them")
        else:
            actions += list(k3s_actions.cluster_actions(config))
    return actions


UP_STATE_FILE = "up-state"   # in the harness dir: whether the last `lab up` finished


def record_up_state(config: LabConfig, state: str) -> None:
    (config.harness_dir / UP_STATE_FILE).write_text(state + "\n")


def up_state(config: LabConfig) -> str | None:
    """"up" once `lab up` finished; "interrupted" or "failed: …" while a lab kept by --retain
    waits for another `lab up` or `lab down`; None for a lab made before states were kept."""
    try:
        return (config.harness_dir / UP_STATE_FILE).read_text().strip() or None
    except OSError:
        return None


def up(config: LabConfig, progress: Progress | None = None, *, retain: bool = False,
       provider: Provider | None = None) -> list[Node]:
    progress = progress or Silent()
    if config.plugin.build is not None:   # before preflight: it checks the file the build makes
        with progress.step(f"build the plugin ({config.plugin.build})"):
            build_plugin(config, progress.info)
    preflight(config)
    provider = provider or make_provider(config)
    refuse_a_foreign_lab(config, provider.nodes())
    harness_dir = private_dir(config.harness_dir)
    record_up_state(config, "in progress")
    try:
        with progress.step(f"provision {len(config.nodes)} {config.lab.provider} nodes "
                           f"of lab {config.name}"):
            nodes = provider.provision()
            emulated = provider_emulates(provider)
            if emulated and config.k3s is not None:
                progress.info("the nodes are emulated (TCG): K3s and Multus waits the config "
                              f"does not size are {EMULATED_WAIT_FACTOR} times as long")
        ctx = ActionContext(config=config, nodes=nodes, state_dir=harness_dir,
                            report=progress.info, emulated=emulated)
        for action in build_actions(config, progress.info):
            with progress.step(action.name):
                action.run(ctx)
        record_up_state(config, "up")
        return nodes
    except (Exception, KeyboardInterrupt) as failure:
        _after_failure(config, provider, progress, retain, failure)
        raise


def _after_failure(config: LabConfig, provider: Provider, progress: Progress, retain: bool,
                   failure: BaseException) -> None:
    from lab.cluster.logs import write_tarball

    dest = config.harness_dir / LOGS_SUBDIR / f"up-failed-{time.strftime('%Y%m%d-%H%M%S')}.tar.gz"
    try:
        write_tarball(provider, config.name, dest)
        progress.info(f"logs of the failed lab: {dest}")
    except Exception as e:  # best effort: the original failure is what the user must see
        progress.info(f"could not collect logs: {e}")
    if retain:
        with contextlib.suppress(OSError):
            record_up_state(config, "interrupted" if isinstance(failure, KeyboardInterrupt)
                            else f"failed: {str(failure).splitlines()[0][:200]}")
        progress.info("--retain: the lab is left as it is; `lab down` removes it")
        return
    with progress.step("clean up the failed lab"):
        down(config, provider=provider)
    if isinstance(failure, LabError) and not failure.hint:
        failure.hint = "re-run with --retain to keep the lab for inspection"


def down(config: LabConfig, *, provider: Provider | None = None) -> None:
    """Removes everything the lab made; failure logs under the harness dir stay."""
    provider = provider or make_provider(config)
    _stop_resident_helpers(config, provider)
    from lab.nodes.ssh import close_shared_connections, lab_ssh_dir

    close_shared_connections(lab_ssh_dir(config.harness_dir))   # `lab deploy` leaves them
    if config.k3s is not None and config.lab.provider == "existing":
        # VMs take K3s with them; machines we only borrowed must be handed back without it,
        # or the next `lab up` mints a token the old cluster refuses.
        from lab.kube.k3s_install import remove_k3s

        remove_k3s(provider.nodes())
    provider.destroy()
    harness_dir = config.harness_dir
    if harness_dir.is_dir():
        for entry in harness_dir.iterdir():
            if entry.name == LOGS_SUBDIR:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        if not any(harness_dir.iterdir()):
            harness_dir.rmdir()


def _stop_resident_helpers(config: LabConfig, provider: Provider) -> None:
    """Our plugin leaves a resident helper per installed file (it idles out on its own); a lab
    that goes down takes its own along rather than leaving a process behind for two minutes
    (another lab's copy has its own helper, which stays)."""
    if not config.plugin_is_cnilab:
        return
    for node in provider.nodes():
        path = f"{plugin_dir(config.lab.provider, node)}/{config.plugin.plugin_type}"
        # best effort: a node already half gone must not stop `lab down`. `env -i`: the
        # environment the lab ran the plugin with (lab.runtime.cni_runtime), so the same run dir,
        # not whatever CNILAB_RUN_DIR the shell running `lab down` has.
        with contextlib.suppress(Exception):
            # ... and the cross-node lock files named after this node's netns (netns labs
            # share the host's run dir: they would pile up there lab after lab)
            node.run(["sh", "-c", f'[ -x "{path}" ] && env -i PATH="{RUNTIME_PATH}" "{path}" '
                                  f'--resident-stop; [ -x "{path}" ] && env -i '
                                  f'PATH="{RUNTIME_PATH}" "{path}" --forget-locks || true'],
                     timeout=30)


def nodes_summary(nodes: Sequence[Node], config: LabConfig | None = None) -> str:
    """`node1 10.99.0.11, …`; with the config, every family's address (dual-stack: v6 too)."""
    from lab.runtime.network import node_addresses

    def addresses(node: Node) -> str:
        if config is None or not node.address:
            return node.address
        return " ".join(node_addresses(config, node).values())

    return ", ".join(f"{n.name} {addresses(n)}" for n in nodes)


__all__ = ["InstallPlugin", "build_actions", "down", "nodes_summary", "up"]
