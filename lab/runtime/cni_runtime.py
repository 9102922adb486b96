"""What a container runtime (containerd through libcni) does with a CNI plugin, over any Node.

Everything goes through `node.run`, so the same code drives a plugin in a netns node and on a VM
over SSH. Like libcni it:
- finds the plugin `<type>` on CNI_PATH and runs it with a minimal environment (no venv on PATH:
  a plugin must cope with what a runtime really gives it), the network config on stdin;
- runs a conflist's plugins in order for ADD (each gets the previous one's result as
  `prevResult`), CHECK through all of them, DEL in reverse order;
- gives a plugin the runtime's capability arguments (portMappings, bandwidth, ips, mac, …) as
  `runtimeConfig` only when its config declares the capability (libcni's injectRuntimeConfig);
- caches each ADD result on the node in `<state_dir>/results/<network>-<containerID>-<ifname>`
  (libcni's `cniCacheV1` layout, netns path, CNI_ARGS and capability arguments included), and
  hands it back as `prevResult` (and the same arguments) to CHECK and DEL;
- sends GC the attachments it still has cached as `cni.dev/valid-attachments`;
- skips GC and STATUS for configs older than 1.1.0; refuses CHECK for those older than 0.4.0
  without calling the plugin, as libcni does.
A plugin's error JSON (on stdout, as libcni reads it) becomes a CniCallError with code/msg/details.
"""
from __future__ import annotations

import base64
import json
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lab.api import Attachment, CommandResult, LabError, NetworkSpec, Node

# What containerd's environment typically holds; deliberately no virtualenv, no pyenv shims.
RUNTIME_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CACHE_KIND = "cniCacheV1"

_FIND_PLUGIN = ('IFS=:; for d in $1; do if [ -x "$d/$2" ]; then echo "$d/$2"; exit 0; fi; done; '
                'exit 1')
_WRITE_FILE = 'mkdir -p "$1" && cat > "$2.tmp" && mv -f "$2.tmp" "$2"'
_CAT_ALL = 'for f in "$1"/*; do [ -f "$f" ] && { cat "$f"; echo; }; done; true'


CALLS_KEPT = 50


class CniCallError(LabError):
    """A plugin call that failed: the CNI error code, message and details, and where."""

    def __init__(self, command: str, node: str, *, code: int | None, msg: str,
                 details: str = "", stderr: str = "", stdout: str = "") -> None:
        self.command, self.node, self.code, self.msg, self.details = (
            command, node, code, msg, details)
        self.stdout = stdout    # what the plugin printed: its error JSON, as it came
        code_text = f"code {code}" if code is not None else "no error JSON"
        super().__init__(f"CNI {command} failed: {msg} ({code_text})", where=node,
                         output="\n".join(part for part in (details, stderr) if part))


def check_refused(cni_version: str) -> str:
    """Why a runtime refuses CHECK for this config version ("" when it does not): CHECK
    exists from CNI 0.4.0, and libcni says so rather than call the plugin."""
    if version_tuple(cni_version) >= (0, 4, 0):
        return ""
    return (f'configuration version "{cni_version}" does not support the CHECK command '
            "(CHECK exists from CNI 0.4.0)")


def not_json(plugin_type: str, stdout: str) -> str:
    """Why stdout is no result: a runtime reads it as one JSON document, nothing before it."""
    lines = stdout.strip().splitlines()
    for n, line in enumerate(lines):
        if line.lstrip().startswith("{"):
            try:
                json.loads("\n".join(lines[n:]))
            except ValueError:
                break
            if n:
                return (f"{plugin_type} printed {n} line(s) that are not JSON before its result, "
                        f"first {lines[0][:120]!r}: stdout must hold the result alone (logs go "
                        "to stderr)")
            break
    return f"{plugin_type} printed something that is not JSON: {(lines or [''])[0][:120]!r}"


def version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return (0,)


def plugin_configs(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-plugin configs libcni derives: a conflist's plugins get its name and cniVersion."""
    if "plugins" not in config:
        return [dict(config)]
    shared = {"name": config.get("name", ""), "cniVersion": config.get("cniVersion", "")}
    return [{**plugin, **shared} for plugin in config["plugins"]]


def with_runtime_config(conf: dict[str, Any],
                        capability_args: dict[str, Any] | None) -> dict[str, Any]:
    """`conf` with `runtimeConfig` holding the capability arguments it declares it takes, as
    libcni injects them: a plugin without `"capabilities": {"mac": true}` never sees the mac."""
    declared = conf.get("capabilities")
    if not capability_args or not isinstance(declared, dict):
        return conf
    wanted = {cap: value for cap, value in capability_args.items() if declared.get(cap) is True}
    return {**conf, "runtimeConfig": wanted} if wanted else conf


@dataclass(frozen=True)
class CachedAttachment:
    """One result cache entry on a node: what ADD returned for an attachment."""

    container_id: str
    ifname: str
    network: str
    netns: str
    cni_args: str
    result: dict[str, Any]
    capability_args: dict[str, Any] = field(default_factory=dict)

    def attachment(self, node: str) -> Attachment:
        return Attachment(self.container_id, self.ifname, node, self.netns)


class CniRuntime:
    """Drives the network under test on one node the way libcni would."""

    def __init__(self, node: Node, spec: NetworkSpec) -> None:
        if node.name not in spec.configs:
            raise LabError(f"no network config for node {node.name}", where=node.name,
                           hint="the lab config renders one config per node; re-run `lab up`")
        self.node, self.spec = node, spec
        self.config: dict[str, Any] = spec.configs[node.name]
        self.cni_version = str(self.config.get("cniVersion", "0.4.0"))
        self.cni_path = spec.cni_path_on(node.name)
        self.results_dir = f"{node.state_dir.rstrip('/')}/results"
        self._plugin_paths: dict[str, str] = {}
        # The last calls made and what the plugin said on stderr: a failing scenario's
        # report shows them (the plugin's own words often name the cause).
        self.calls: deque[str] = deque(maxlen=CALLS_KEPT)

    # -- the CNI commands ---------------------------------------------------------------
    def add(self, container_id: str, netns: str, ifname: str | None = None,
            cni_args: str = "", capability_args: dict[str, Any] | None = None
            ) -> dict[str, Any]:
        """ADD through every plugin of the config, each given the previous one's result as
        prevResult; caches and returns the last one's result (libcni's AddNetworkList)."""
        ifname = ifname or self.spec.ifname
        prev: dict[str, Any] | None = None
        for conf in self._plugin_configs(capability_args):
            if prev is not None:
                conf["prevResult"] = prev
            prev = self._invoke("ADD", conf, container_id, netns, ifname, cni_args) or {}
        result = prev or {}
        self._write_cache(CachedAttachment(container_id, ifname, self.spec.name, netns,
                                           cni_args, result, dict(capability_args or {})))
        return result

    def _plugin_configs(self, capability_args: dict[str, Any] | None
                        ) -> list[dict[str, Any]]:
        return [with_runtime_config(conf, capability_args)
                for conf in plugin_configs(self.config)]

    def check(self, container_id: str, ifname: str | None = None) -> None:
        """CHECK with the cached ADD result as prevResult; raises CniCallError on a mismatch."""
        ifname = ifname or self.spec.ifname
        cached = self.cached(container_id, ifname)
        if cached is None:
            raise CniCallError("CHECK", self.node.name, code=3,
                               msg=f"no cached ADD result for {container_id}/{ifname}",
                               details=f"looked in {self._cache_path(container_id, ifname)}")
        refused = check_refused(self.cni_version)
        if refused:     # libcni's CheckNetwork(List) fails before calling any plugin
            raise CniCallError("CHECK", self.node.name, code=1, msg=refused)
        for conf in self._plugin_configs(cached.capability_args):
            conf["prevResult"] = cached.result
            self._invoke("CHECK", conf, container_id, cached.netns, ifname, cached.cni_args)

    def delete(self, container_id: str, ifname: str | None = None, netns: str | None = None,
               cni_args: str = "") -> None:
        """DEL in reverse plugin order with the cached result; removes the cache entry after."""
        ifname = ifname or self.spec.ifname
        cached = self.cached(container_id, ifname)
        if netns is None:
            netns = cached.netns if cached else ""
        for conf in reversed(self._plugin_configs(cached.capability_args if cached else None)):
            if cached is not None and version_tuple(self.cni_version) >= (0, 4, 0):
                conf["prevResult"] = cached.result
            self._invoke("DEL", conf, container_id, netns, ifname,
                         cached.cni_args if cached else cni_args)
        self.node.run(["rm", "-f", self._cache_path(container_id, ifname)]).check(self.node.name)

    def gc(self, valid: Sequence[Attachment] | None = None) -> str:
        """GC with the cached attachments of this network (or `valid`) as the valid ones.

        Returns "" when GC ran, or why it was skipped (as libcni skips it before 1.1.0).
        """
        if version_tuple(self.cni_version) < (1, 1, 0):
            return (f"GC skipped: the config's cniVersion {self.cni_version} predates 1.1.0, "
                    "so a runtime never sends GC")
        for conf in self._gc_configs(valid):
            self._invoke("GC", conf, "", "", "", "")
        return ""

    def _gc_configs(self, valid: Sequence[Attachment] | None) -> list[dict[str, Any]]:
        if valid is None:
            valid = [c.attachment(self.node.name) for c in self.cached_attachments()]
        listed = [{"containerID": a.container_id, "ifname": a.ifname} for a in valid]
        confs = plugin_configs(self.config)
        for conf in confs:
            conf["cni.dev/valid-attachments"] = listed
            conf["cni.dev/attachments"] = listed  # the 1.1.0 tag's wording; libcni sends both
        return confs

    def node_calls_for(self, command: str) -> list[tuple[list[str], str]]:
        """The plugin calls GC (the cached attachments as the valid ones) or STATUS would
        make now (`lab cni show --command GC NODE`)."""
        confs = self._gc_configs(None) if command == "GC" else plugin_configs(self.config)
        return [self.invocation(command, conf, "", "", "", "") for conf in confs]

    def gc_result(self, valid: Sequence[Attachment] | None = None) -> CommandResult:
        """gc() as the CommandResult a scenario asserts on: rc 1 with the plugin's error, or
        rc 0 with why GC was skipped (empty when it ran)."""
        argv = ("CNI", "GC", self.node.name)
        try:
            skipped = self.gc(valid)
        except CniCallError as e:
            return CommandResult(argv, 1, "", e.describe())
        return CommandResult(argv, 0, "", skipped)

    def status(self) -> str:
        """STATUS; "" when the plugin is ready, or why it was skipped. Raises when not ready."""
        if version_tuple(self.cni_version) < (1, 1, 0):
            return f"STATUS skipped: cniVersion {self.cni_version} predates 1.1.0"
        for conf in plugin_configs(self.config):
            self._invoke("STATUS", conf, "", "", "", "")
        return ""

    def version(self) -> dict[str, Any]:
        conf = plugin_configs(self.config)[0]
        return self._invoke("VERSION", {"cniVersion": self.cni_version}, "", "", "", "",
                            plugin_type=str(conf.get("type", ""))) or {}

    # -- the result cache ---------------------------------------------------------------
    def cached(self, container_id: str, ifname: str | None = None) -> CachedAttachment | None:
        ifname = ifname or self.spec.ifname
        res = self.node.run(["cat", self._cache_path(container_id, ifname)])
        if not res.ok:
            return None
        return self._parse_cache(res.stdout)

    def cached_attachments(self) -> list[CachedAttachment]:
        """Every cached attachment of this network on the node."""
        res = self.node.run(["sh", "-c", _CAT_ALL, "sh", self.results_dir]).check(self.node.name)
        entries = (self._parse_cache(line) for line in res.stdout.splitlines() if line.strip())
        return [e for e in entries if e is not None and e.network == self.spec.name]

    def forget(self, container_id: str, ifname: str | None = None) -> None:
        """Drops a cache entry without DEL: what a runtime that lost track leaves behind."""
        path = self._cache_path(container_id, ifname or self.spec.ifname)
        self.node.run(["rm", "-f", path]).check(self.node.name)

    def _cache_path(self, container_id: str, ifname: str) -> str:
        return f"{self.results_dir}/{self.spec.name}-{container_id}-{ifname}"

    def _write_cache(self, entry: CachedAttachment) -> None:
        doc = {
            "kind": CACHE_KIND, "containerId": entry.container_id, "ifName": entry.ifname,
            "networkName": entry.network, "netns": entry.netns, "cniArgs": entry.cni_args,
            "config": base64.b64encode(json.dumps(self.config).encode()).decode(),
            "capabilityArgs": entry.capability_args, "result": entry.result,
        }
        path = self._cache_path(entry.container_id, entry.ifname)
        self.node.run(["sh", "-c", _WRITE_FILE, "sh", self.results_dir, path],
                      input=json.dumps(doc)).check(self.node.name)

    @staticmethod
    def _parse_cache(text: str) -> CachedAttachment | None:
        try:
            doc = json.loads(text)
        except ValueError:
            return None  # a foreign or half-written file: libcni ignores those too
        if not isinstance(doc, dict) or doc.get("kind") != CACHE_KIND:
            return None
        return CachedAttachment(
            container_id=str(doc.get("containerId", "")), ifname=str(doc.get("ifName", "")),
            network=str(doc.get("networkName", "")), netns=str(doc.get("netns", "")),
            cni_args=str(doc.get("cniArgs", "")), result=doc.get("result") or {},
            capability_args=doc.get("capabilityArgs") or {})

    # -- running the plugin -------------------------------------------------------------
    def plugin_path(self, plugin_type: str) -> str:
        if plugin_type not in self._plugin_paths:
            res = self.node.run(["sh", "-c", _FIND_PLUGIN, "sh", self.cni_path, plugin_type])
            if not res.ok or not res.stdout.strip():
                raise LabError(f"CNI plugin {plugin_type!r} not found on CNI_PATH",
                               where=self.node.name, output=f"CNI_PATH={self.cni_path}",
                               hint="install the plugin on the node (`lab up` / `lab deploy`)")
            self._plugin_paths[plugin_type] = res.stdout.strip().splitlines()[0]
        return self._plugin_paths[plugin_type]

    def invocation(self, command: str, conf: dict[str, Any], container_id: str, netns: str,
                   ifname: str, cni_args: str, plugin_type: str | None = None
                   ) -> tuple[list[str], str]:
        """(argv, stdin) of one plugin call exactly as this runtime makes it on the node."""
        plugin_type = plugin_type or str(conf.get("type", ""))
        env = {
            "PATH": RUNTIME_PATH, "CNI_COMMAND": command, "CNI_CONTAINERID": container_id,
            "CNI_NETNS": netns, "CNI_IFNAME": ifname, "CNI_ARGS": cni_args,
            "CNI_PATH": self.cni_path,
        }
        # `env -i` gives the plugin exactly this environment on any node, local or SSH.
        argv = ["env", "-i", *(f"{k}={v}" for k, v in env.items()),
                self.plugin_path(plugin_type)]
        return argv, json.dumps(conf)

    def calls_for(self, command: str, container_id: str,
                  ifname: str | None = None) -> list[tuple[list[str], str]]:
        """The plugin calls ADD, CHECK or DEL of an attachment would make now, in order, with
        the cached ADD result as prevResult where the spec wants one (`lab cni show`)."""
        ifname = ifname or self.spec.ifname
        cached = self.cached(container_id, ifname)
        if cached is None and command != "ADD":
            raise LabError(f"no cached ADD result for {container_id}/{ifname}",
                           where=self.node.name,
                           hint=f"looked in {self._cache_path(container_id, ifname)}")
        confs = self._plugin_configs(cached.capability_args if cached else None)
        if command == "DEL":
            confs.reverse()
        calls = []
        for conf in confs:
            if cached is not None and command in ("CHECK", "DEL"):
                conf["prevResult"] = cached.result
            calls.append(self.invocation(command, conf, container_id,
                                         cached.netns if cached else "", ifname,
                                         cached.cni_args if cached else ""))
        return calls

    def _invoke(self, command: str, conf: dict[str, Any], container_id: str, netns: str,
                ifname: str, cni_args: str, plugin_type: str | None = None
                ) -> dict[str, Any] | None:
        plugin_type = plugin_type or str(conf.get("type", ""))
        argv, stdin = self.invocation(command, conf, container_id, netns, ifname, cni_args,
                                      plugin_type)
        res = self.node.run(argv, input=stdin, timeout=120)
        self.calls.append(f"{self.node.name} {command} {container_id or '-'} {ifname or '-'} "
                          f"rc={res.rc}" + (f"\n  stderr: {res.stderr.strip()[-1500:]}"
                                            if res.stderr.strip() else "")
                          + (f"\n  stdout: {res.stdout.strip()[-1500:]}" if res.rc else ""))
        if res.rc != 0:
            raise self._call_error(command, res.stdout, res.stderr)
        if not res.stdout.strip():
            return None
        try:
            out = json.loads(res.stdout)
        except ValueError:
            raise CniCallError(command, self.node.name, code=None,
                               msg=not_json(plugin_type, res.stdout),
                               details=res.stdout[-2000:], stderr=res.stderr) from None
        return out if isinstance(out, dict) else None

    def _call_error(self, command: str, stdout: str, stderr: str) -> CniCallError:
        try:
            err = json.loads(stdout)
        except ValueError:
            err = None
        if isinstance(err, dict) and "msg" in err:
            code = err.get("code")
            return CniCallError(command, self.node.name,
                                code=code if isinstance(code, int) else None,
                                msg=str(err.get("msg", "")), details=str(err.get("details", "")),
                                stderr=stderr, stdout=stdout)
        lines = (stderr or stdout).strip().splitlines()
        return CniCallError(command, self.node.name, code=None,
                            msg=lines[-1] if lines else "plugin exited non-zero",
                            details=stdout, stderr=stderr)
