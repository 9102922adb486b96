"""The dispatcher: CNI_* environment + stdin -> one command -> an Outcome to print.

Like the Go `skel` package: VERSION needs nothing; every other command gets its environment
checked (code 4, naming the variable), its stdin decoded (6), its cniVersion checked (1) and
its config validated (7) before any command runs. dispatch() never raises and never prints:
the caller writes the Outcome, so a test or a forked resident child can call it directly.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from plugin.errors import (
    DECODE_FAILURE,
    INCOMPATIBLE_VERSION,
    INVALID_CONFIG,
    INVALID_ENV,
    IO_FAILURE,
    CniError,
)
from plugin.log import CallLog
from plugin.result import LATEST, SUPPORTED_VERSIONS, render

INTERNAL_ERROR = 999
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")
_REQUIRED: dict[str, tuple] = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "GC": ("CNI_PATH",),
    "STATUS": (),
}
# Same rules as libcni's ValidateContainerID / ValidateNetworkName.
_ID_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")


@dataclass
class Outcome:
    exit_code: int
    stdout: str
    stderr: str


def version_info() -> dict[str, Any]:
    return {"cniVersion": LATEST, "supportedVersions": list(SUPPORTED_VERSIONS)}


def _env_error(name: str, why: str) -> CniError:
    return CniError(INVALID_ENV, f"{name} {why}")


def _ifname_problem(name: str) -> str:
    if len(name) > 15:
        return "is longer than 15 characters"
    if name in (".", ".."):
        return "cannot be . or .."
    if any(c in name for c in "/:") or any(c.isspace() for c in name):
        return "contains '/', ':' or whitespace"
    return ""


def _parse_cni_args(text: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in filter(None, text.split(";")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise _env_error("CNI_ARGS", f"has {item!r}, expected KEY=VALUE pairs joined by ';'")
        pairs[key] = value
    return pairs


def read_call(command: str, env: Mapping[str, str]) -> Any:
    from plugin.commands import Call

    for name in _REQUIRED[command]:
        if not env.get(name):
            raise _env_error(name, f"is not set (required for {command})")
    container_id = env.get("CNI_CONTAINERID", "")
    if container_id and not _ID_RE.match(container_id):
        raise _env_error("CNI_CONTAINERID", f"{container_id!r} is invalid: letters, digits, "
                                            "'_', '.', '-', starting with a letter or digit")
    ifname = env.get("CNI_IFNAME", "")
    if ifname and _ifname_problem(ifname):
        raise _env_error("CNI_IFNAME", f"{ifname!r} {_ifname_problem(ifname)}")
    return Call(command=command, container_id=container_id, netns=env.get("CNI_NETNS", ""),
                ifname=ifname, args=_parse_cni_args(env.get("CNI_ARGS", "")),
                cni_path=env.get("CNI_PATH", ""), env=env)


def _decode(stdin: bytes) -> dict[str, Any]:
    try:
        raw = json.loads(stdin.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise CniError(DECODE_FAILURE, "cannot decode the network config on stdin",
                       str(e)) from None
    if not isinstance(raw, dict):
        raise CniError(DECODE_FAILURE, "the network config on stdin must be a JSON object")
    return raw


def _check_version(command: str, version: Any) -> None:
    if not isinstance(version, str):
        return  # netconf.parse names the missing/invalid field (code 7)
    if version not in SUPPORTED_VERSIONS:
        raise CniError(INCOMPATIBLE_VERSION, "incompatible CNI versions",
                       f"config is {version!r}, cnilab supports "
                       f"{', '.join(SUPPORTED_VERSIONS)}")
    from plugin.commands import unsupported_for

    problem = unsupported_for(command, version)
    if problem is not None:
        raise problem


def _run(command: str, env: Mapping[str, str], stdin: bytes, log: CallLog) -> str:
    from plugin import commands, netconf

    call = read_call(command, env)
    raw = _decode(stdin)
    _check_version(command, raw.get("cniVersion"))
    conf = netconf.parse(raw)
    log.log_file = conf.log_file
    if not _ID_RE.match(conf.name):
        raise CniError(INVALID_CONFIG, f"invalid network config: name: {conf.name!r} may only "
                                       "hold letters, digits, '_', '.', '-'")
    if command == "ADD":
        return json.dumps(render(commands.cmd_add(conf, call, log), conf.cni_version))
    handlers = {"DEL": commands.cmd_del, "CHECK": commands.cmd_check,
                "STATUS": commands.cmd_status, "GC": commands.cmd_gc}
    handlers[command](conf, call, log)
    return ""


def _error_version(stdin: bytes) -> str:
    try:
        version = json.loads(stdin.decode("utf-8")).get("cniVersion")
    except Exception:  # undecodable stdin: answer in the newest version
        return LATEST
    return version if version in SUPPORTED_VERSIONS else LATEST


def dispatch(env: Mapping[str, str], stdin: bytes) -> Outcome:
    command = env.get("CNI_COMMAND", "")
    log = CallLog(command, env.get("CNI_CONTAINERID", ""))
    try:
        if not command:
            raise _env_error("CNI_COMMAND", "is not set")
        if command not in COMMANDS:
            raise _env_error("CNI_COMMAND", f"{command!r} is not one of {', '.join(COMMANDS)}")
        if command == "VERSION":
            return Outcome(0, json.dumps(version_info()) + "\n", "")
        out = _run(command, env, stdin, log)
        return Outcome(0, out + "\n" if out else "", log.flush())
    except CniError as e:
        error = e
    except OSError as e:
        error = CniError(IO_FAILURE, f"I/O failure: {e.strerror or e}",
                         f"{type(e).__name__}: {e}")
    except Exception as e:  # never a traceback: the runtime gets JSON, the log the reason
        error = CniError(INTERNAL_ERROR, f"internal error: {type(e).__name__}",
                         f"{type(e).__name__}: {e}")
    log.error(f"code {error.code}: {error.msg}" + (f" ({error.details})" if error.details
                                                    else ""))
    body = json.dumps(error.to_json(_error_version(stdin)))
    return Outcome(1, body + "\n", log.flush())
