"""`lab up`: provision the nodes, then an ordered list of small idempotent actions sharing one
ActionContext (install the plugin under test, then K3s + Multus when the config asks for them).
On failure the logs are collected, then the lab is removed unless --retain (kind's shape)."""
from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from lab.api import Action, ActionContext, LabError, Node, Provider
from lab.config import LabConfig
from lab.progress import Progress, Silent
from lab.providers import make_provider, plugin_dir

LOGS_SUBDIR = "logs"   # kept by `lab down`: failure logs outlive the lab they explain


class InstallPlugin:
    """Puts the plugin under test on every node as <plugin dir>/<type>, where CNI_PATH finds it."""

    name = "install the plugin under test"

    def run(self, ctx: ActionContext) -> None:
        config: LabConfig = ctx.config
        local = config.plugin_path
        if not local.is_file():
            raise LabError(f"plugin.path: no plugin executable at {local}",
                           hint="build ours with `python -m plugin.build` (-> dist/cnilab) "
                                "or point plugin.path at the CNI plugin to test")
        if not os.access(local, os.X_OK):
            raise LabError(f"plugin.path: {local} is not executable", hint=f"chmod +x {local}")
        plugin_type = config.plugin.plugin_type

        def install(node: Node) -> None:
            node.put_file(local, f"{plugin_dir(config.lab.provider, node)}/{plugin_type}")

        # SSH copies are slow one by one; threads are plenty for a handful of uploads.
        with ThreadPoolExecutor(max_workers=min(8, len(ctx.nodes) or 1)) as pool:
            list(pool.map(install, ctx.nodes))
        if ctx.report:
            ctx.report(f"{local.name} -> {len(ctx.nodes)} nodes as {plugin_type}")


def build_actions(config: LabConfig, report: object = None) -> list[Action]:
    actions: list[Action] = [InstallPlugin()]
    if config.k3s is not None:
        try:   # the K3s work; loaded only when the config asks for K3s
            k3s_actions = importlib.import_module("lab.k3s.actions")
        except ModuleNotFoundError as e:
            if e.name != "lab.k3s.actions":
                raise
            if callable(report):
                report("[k3s] is set but this install has no K3s actions: skipping them")
        else:
            actions += list(k3s_actions.cluster_actions(config))
    return actions


def up(config: LabConfig, progress: Progress | None = None, *, retain: bool = False,
       provider: Provider | None = None) -> list[Node]:
    progress = progress or Silent()
    provider = provider or make_provider(config)
    harness_dir = config.harness_dir
    harness_dir.mkdir(parents=True, exist_ok=True)
    try:
        with progress.step(f"provision {len(config.nodes)} {config.lab.provider} nodes "
                           f"of lab {config.name}"):
            nodes = provider.provision()
        ctx = ActionContext(config=config, nodes=nodes, state_dir=harness_dir,
                            report=progress.info)
        for action in build_actions(config, progress.info):
            with progress.step(action.name):
                action.run(ctx)
        return nodes
    except (Exception, KeyboardInterrupt) as failure:
        _after_failure(config, provider, progress, retain, failure)
        raise


def _after_failure(config: LabConfig, provider: Provider, progress: Progress, retain: bool,
                   failure: BaseException) -> None:
    from lab.logs import write_tarball

    dest = config.harness_dir / LOGS_SUBDIR / f"up-failed-{time.strftime('%Y%m%d-%H%M%S')}.tar.gz"
    try:
        write_tarball(provider, config.name, dest)
        progress.info(f"logs of the failed lab: {dest}")
    except Exception as e:  # best effort: the original failure is what the user must see
        progress.info(f"could not collect logs: {e}")
    if retain:
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
    if config.k3s is not None and config.lab.provider == "existing":
        # VMs take K3s with them; machines we only borrowed must be handed back without it,
        # or the next `lab up` mints a token the old cluster refuses.
        from lab.k3s.actions import remove_k3s

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
    """Our plugin leaves a resident helper per build (it idles out on its own); a lab that goes
    down takes it along rather than leaving a process behind for two minutes."""
    if config.plugin.plugin_type != "cnilab":
        return
    for node in provider.nodes():
        path = f"{plugin_dir(config.lab.provider, node)}/cnilab"
        # best effort: a node already half gone must not stop `lab down`
        with contextlib.suppress(Exception):
            node.run(["sh", "-c", f'[ -x "{path}" ] && "{path}" --resident-stop || true'],
                     timeout=20)


def nodes_summary(nodes: Sequence[Node]) -> str:
    return ", ".join(f"{n.name} {n.address}" for n in nodes)


__all__ = ["InstallPlugin", "build_actions", "down", "nodes_summary", "up"]
