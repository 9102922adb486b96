"""Delegated IPAM: run the plugin named in `ipam.type` from CNI_PATH, as the spec says.

Any IPAM plugin works. Versions are negotiated: a 1.1.0 network is sent to IPAM as 1.0.0 first
(the documents are the same, and Debian's host-local stops at 1.0.0); if IPAM still answers
"incompatible version", its VERSION answer picks the newest version both sides speak.
"""
from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from typing import Any, Optional

from plugin import result
from plugin.errors import (
    INCOMPATIBLE_VERSION,
    INVALID_CONFIG,
    IO_FAILURE,
    IPAM_FAILURE,
    CniError,
)

IPAM_TIMEOUT = 60.0  # host-local waits on its lock file; a hung IPAM must not hang the runtime


def find_plugin(name: str, cni_path: str) -> str:
    """The executable `name` in the first CNI_PATH directory holding it."""
    if not name or "/" in name or name in (".", ".."):
        raise CniError(INVALID_CONFIG, f"invalid network config: ipam.type: {name!r} is not "
                                       "a plugin name")
    dirs = [d for d in cni_path.split(os.pathsep) if d]
    for d in dirs:
        candidate = os.path.join(d, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise CniError(INVALID_CONFIG,
                   f"invalid network config: ipam.type: no plugin {name!r} on CNI_PATH",
                   f"searched {', '.join(dirs) or '(CNI_PATH is empty)'}; install it there "
                   "or name an IPAM plugin that is")


class Ipam:
    """One IPAM plugin as this call sees it: where it is, and the env to run it with."""

    def __init__(self, ipam_conf: dict[str, Any], env: Mapping[str, str]) -> None:
        self.conf = ipam_conf
        self.type = str(ipam_conf["type"])
        self.env = dict(env)
        self.path = find_plugin(self.type, self.env.get("CNI_PATH", ""))

    def _run(self, command: str, stdin: bytes, env_overrides: Mapping[str, str]) -> Any:
        env = dict(self.env, CNI_COMMAND=command, **env_overrides)
        try:
            p = subprocess.run([self.path], input=stdin, env=env, capture_output=True,
                               timeout=IPAM_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise CniError(IPAM_FAILURE, f"IPAM {self.type} {command}: no answer after "
                                         f"{IPAM_TIMEOUT:.0f}s") from None
        except OSError as e:
            raise CniError(IO_FAILURE, f"IPAM {self.type} {command}: cannot run {self.path}",
                           str(e)) from None
        out = p.stdout.decode(errors="replace").strip()
        decoded: Any = None
        if out:
            try:
                decoded = json.loads(out)
            except ValueError:
                decoded = None
        if p.returncode != 0:
            if isinstance(decoded, dict) and isinstance(decoded.get("code"), int):
                # Spec codes (< 100) mean the same to our caller; IPAM's own codes do not,
                # so they become "IPAM failure" (100) with the original code kept in details.
                code = decoded["code"]
                details = str(decoded.get("details") or "")
                if code >= 100:
                    details = f"IPAM {self.type} answered code {code}. {details}".strip()
                    code = IPAM_FAILURE
                raise CniError(code, f"IPAM {self.type} {command}: {decoded.get('msg', '')}",
                               details)
            err = p.stderr.decode(errors="replace").strip()
            raise CniError(IPAM_FAILURE, f"IPAM {self.type} {command} failed "
                                         f"(exit {p.returncode})", (out + "\n" + err).strip())
        if out and decoded is None:
            raise CniError(IPAM_FAILURE, f"IPAM {self.type} {command}: output is not JSON",
                           out[:500])
        return decoded

    def supported_versions(self) -> list[str]:
        answer = self._run("VERSION", b'{"cniVersion":"0.4.0"}', {})
        versions = answer.get("supportedVersions") if isinstance(answer, dict) else None
        return [v for v in versions if isinstance(v, str)] if isinstance(versions, list) else []

    def call(self, command: str, network: Mapping[str, Any], version: str,
             env_overrides: Optional[Mapping[str, str]] = None) -> Any:
        """Runs `command` with `network` (ipam swapped for ours) at the best version."""
        overrides = dict(env_overrides or {})
        first = "1.0.0" if version == "1.1.0" and command in ("ADD", "DEL", "CHECK") else version
        try:
            return self._run(command, self._stdin(network, first), overrides)
        except CniError as e:
            if e.code != INCOMPATIBLE_VERSION:
                raise
        common = [v for v in self.supported_versions()
                  if v in result.SUPPORTED_VERSIONS and v != first]
        if command in ("STATUS", "GC"):
            common = [v for v in common if result.version_key(v) >= (1, 1, 0)]
        if not common:
            raise CniError(INCOMPATIBLE_VERSION,
                           f"IPAM {self.type} speaks no CNI version cnilab can use for {command}",
                           f"cnilab speaks {', '.join(result.SUPPORTED_VERSIONS)}")
        best = max(common, key=result.version_key)
        return self._run(command, self._stdin(network, best), overrides)

    def _stdin(self, network: Mapping[str, Any], version: str) -> bytes:
        doc = dict(network, cniVersion=version, ipam=self.conf)
        if isinstance(doc.get("prevResult"), dict):
            doc["prevResult"] = result.convert(doc["prevResult"], version)
        return json.dumps(doc).encode()

    def add(self, network: Mapping[str, Any], version: str) -> result.Result:
        answer = self.call("ADD", network, version)
        res = result.normalize(answer, f"IPAM {self.type} result")
        if not res["ips"]:
            raise CniError(IPAM_FAILURE, f"IPAM {self.type} returned no IP address")
        return res

    def delete(self, network: Mapping[str, Any], version: str,
               container_id: Optional[str] = None, ifname: Optional[str] = None) -> None:
        """Releases one attachment's addresses (another attachment's when named: GC)."""
        overrides: dict[str, str] = {}
        if container_id is not None:
            overrides.update(CNI_CONTAINERID=container_id, CNI_NETNS="")
        if ifname is not None:
            overrides["CNI_IFNAME"] = ifname
        self.call("DEL", network, version, overrides)
