"""`lab up`'s step for [[plugin.chain]]: ship the chained plugins that name a `path` to every
node's plugin dir, then make sure each chained type is found on every node's CNI_PATH and
serves the network's cniVersion, so a missing `tuning` fails `lab up`, not the first ADD."""
from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lab.api import ActionContext, LabError, Node
from lab.config import LabConfig
from lab.nodes.providers import plugin_dir

_FIND = ('IFS=:; for d in $1; do if [ -x "$d/$2" ]; then echo "$d/$2"; exit 0; fi; done; '
         'exit 1')


def chained_executables(config: LabConfig) -> dict[str, Path]:
    """type -> the local executable to ship, for chain entries with a path; a clear error for
    a path that is no executable (checked before any node exists)."""
    base = config.source.parent if config.source else Path.cwd()
    found: dict[str, Path] = {}
    for i, entry in enumerate(config.plugin.chain):
        local = entry.resolved_path(base)
        if local is None:
            continue
        if not local.is_file() or not os.access(local, os.X_OK):
            raise LabError(f"plugin.chain[{i}].path: {local} is not an executable file",
                           hint=f"fix the path, or leave it out to use the node's own "
                                f"{entry.type} (e.g. Debian's /usr/lib/cni/{entry.type})")
        found[entry.type] = local
    return found


class InstallChainedPlugins:
    """The chained plugins on every node, each one found and asked its VERSION there."""

    name = "install and check the chained plugins"

    def run(self, ctx: ActionContext) -> None:
        from lab.runtime.network import base_config, node_cni_path

        config: LabConfig = ctx.config
        shipped = chained_executables(config)
        wanted = str(base_config(config).get("cniVersion", ""))

        def install(node: Node) -> list[str]:
            bin_dir = plugin_dir(config.lab.provider, node)
            for plugin_type, local in shipped.items():
                node.put_file(local, f"{bin_dir}/{plugin_type}")
            cni_path = node_cni_path(config, node)
            return [_check(node, entry.type, cni_path, wanted) for entry in config.plugin.chain]

        with ThreadPoolExecutor(max_workers=min(8, len(ctx.nodes) or 1)) as pool:
            found = list(pool.map(install, ctx.nodes))
        if ctx.report and found:
            ctx.report("chained: " + ", ".join(found[0]) + f" (cniVersion {wanted})")


def _check(node: Node, plugin_type: str, cni_path: str, version: str) -> str:
    res = node.run(["sh", "-c", _FIND, "sh", cni_path, plugin_type])
    if not res.ok or not res.stdout.strip():
        raise LabError(f"chained plugin {plugin_type!r} is not on the node's CNI_PATH",
                       where=node.name, output=f"CNI_PATH={cni_path}",
                       hint="install it there (Debian: containernetworking-plugins) or give "
                            "its executable as path in its [[plugin.chain]] entry")
    path = res.stdout.strip().splitlines()[0]
    answer = node.run([path], input=json.dumps({"cniVersion": version}),
                      env={"CNI_COMMAND": "VERSION", "CNI_PATH": cni_path}, timeout=60)
    try:
        supported = [str(v) for v in json.loads(answer.stdout)["supportedVersions"]]
    except (ValueError, KeyError, TypeError):
        raise LabError(f"chained plugin {path} gave no VERSION answer (rc={answer.rc})",
                       where=node.name, output=(answer.stdout + answer.stderr)[-2000:]) from None
    if version not in supported:
        raise LabError(f"chained plugin {path} does not serve cniVersion {version} (it serves "
                       f"{', '.join(supported)})", where=node.name,
                       hint="set cniVersion in [plugin.config] to one every plugin of the "
                            "chain serves, or ship a newer build as its path (e.g. "
                            "/var/cache/cnilab/inputs/cni-plugins-v1.5.1/)")
    return path
