"""The dispatcher: CNI_* environment + stdin -> one command -> an Outcome to print.

Like the Go `skel` package: VERSION needs nothing; every other command gets its environment
checked (code 4, naming the variable), its stdin decoded (6), its cniVersion checked (1) and
its config validated (7) before any command runs. dispatch() never raises and never prints:
the caller writes the Outcome, so a test or a forked resident child can call it directly.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Optional

from plugin.cni.errors import (
    DECODE_FAILURE,
    INCOMPATIBLE_VERSION,
    INVALID_CONFIG,
    INVALID_ENV,
    IO_FAILURE,
    CniError,
)
from plugin.cni.log import CallLog
from plugin.cni.names import id_problem, ifname_problem
from plugin.cni.result import LATEST, SUPPORTED_VERSIONS, render

INTERNAL_ERROR = 999
# A network config is a few KiB (a prevResult included) and a handful of levels deep; past
# these limits it is refused (code 6) before it can cost memory or recursion, and the same
# way whichever path (helper or in-process) runs the call.
MAX_CONFIG_BYTES = 4 << 20
MAX_CONFIG_DEPTH = 64
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")
_REQUIRED: dict[str, tuple] = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "GC": ("CNI_PATH",),
    "STATUS": (),
}
@dataclass
class Outcome:
    exit_code: int
    stdout: str
    stderr: str


def version_info() -> dict[str, Any]:
    return {"cniVersion": LATEST, "supportedVersions": list(SUPPORTED_VERSIONS)}


def _env_error(name: str, why: str) -> CniError:
    return CniError(INVALID_ENV, f"{name} {why}")


def _parse_cni_args(text: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in filter(None, text.split(";")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise _env_error("CNI_ARGS", f"has {item!r}, expected KEY=VALUE pairs joined by ';'")
        pairs[key] = value
    return pairs


def _never() -> bool:
    return False


def read_call(command: str, env: Mapping[str, str],
              abandoned: Optional[Callable[[], bool]] = None) -> Any:
    from plugin.cni.commands import Call
    from plugin.cni.deadline import Deadline

    for name in _REQUIRED[command]:
        if not env.get(name):
            raise _env_error(name, f"is not set (required for {command})")
    container_id = env.get("CNI_CONTAINERID", "")
    if container_id and id_problem(container_id):
        raise _env_error("CNI_CONTAINERID", f"{container_id[:80]!r} {id_problem(container_id)}")
    ifname = env.get("CNI_IFNAME", "")
    if ifname and ifname_problem(ifname):
        raise _env_error("CNI_IFNAME", f"{ifname!r} {ifname_problem(ifname)}")
    return Call(command=command, container_id=container_id, netns=env.get("CNI_NETNS", ""),
                ifname=ifname, args=_parse_cni_args(env.get("CNI_ARGS", "")),
                cni_path=env.get("CNI_PATH", ""), env=env, deadline=Deadline.for_call(env),
                abandoned=abandoned or _never)


def _decode(stdin: bytes) -> dict[str, Any]:
    if len(stdin) > MAX_CONFIG_BYTES:
        raise CniError(DECODE_FAILURE, f"the network config on stdin is larger than "
                                       f"{MAX_CONFIG_BYTES >> 20} MiB")
    try:
        raw = json.loads(stdin.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise CniError(DECODE_FAILURE, "cannot decode the network config on stdin",
                       str(e)) from None
    except RecursionError:
        raw = None  # deeper than the interpreter can parse: refused just below
    if raw is None or _deeper_than(raw, MAX_CONFIG_DEPTH):
        raise CniError(DECODE_FAILURE, f"the network config on stdin is nested more than "
                                       f"{MAX_CONFIG_DEPTH} levels deep")
    if not isinstance(raw, dict):
        raise CniError(DECODE_FAILURE, "the network config on stdin must be a JSON object")
    return raw


def _deeper_than(doc: Any, limit: int) -> bool:
    """Whether `doc` nests lists/objects more than `limit` deep (iterative: no recursion)."""
    level: list[Any] = [doc]
    for _ in range(limit):
        level = [child for item in level
                 for child in (item.values() if isinstance(item, dict) else
                               item if isinstance(item, list) else ())
                 if isinstance(child, (dict, list))]
        if not level:
            return False
    return bool(level)


def _without_bad_prev_result(raw: dict[str, Any], log: CallLog) -> dict[str, Any]:
    """DEL with a prevResult it cannot read: releases what it can without it (as ptp does),
    instead of failing on every retry after the host veth is gone."""
    from plugin.cni.result import normalize

    prev = raw.get("prevResult")
    if prev is None:
        return raw
    try:
        normalize(prev, "prevResult")
    except CniError as e:
        log.warn(f"DEL ignores the prevResult it was given: {e.msg}")
        return {k: v for k, v in raw.items() if k != "prevResult"}
    return raw


def _check_version(command: str, version: Any) -> None:
    if not isinstance(version, str):
        return  # netconf.parse names the missing/invalid field (code 7)
    if version not in SUPPORTED_VERSIONS:
        raise CniError(INCOMPATIBLE_VERSION, "incompatible CNI versions",
                       f"config is {version!r}, cnilab supports "
                       f"{', '.join(SUPPORTED_VERSIONS)}")
    from plugin.cni.commands import unsupported_for

    problem = unsupported_for(command, version)
    if problem is not None:
        raise problem


def _run(command: str, env: Mapping[str, str], stdin: bytes, log: CallLog,
         abandoned: Optional[Callable[[], bool]]) -> str:
    from plugin.cni import commands, netconf

    call = read_call(command, env, abandoned)
    raw = _decode(stdin)
    _check_version(command, raw.get("cniVersion"))
    if command == "DEL":
        raw = _without_bad_prev_result(raw, log)
    conf = netconf.parse(raw)
    log.log_file = conf.log_file
    if id_problem(conf.name):
        raise CniError(INVALID_CONFIG, f"invalid network config: name: {conf.name[:80]!r} "
                                       f"{id_problem(conf.name)}")
    if command == "ADD":
        return json.dumps(render(commands.cmd_add(conf, call, log), conf.cni_version))
    handlers = {"DEL": commands.cmd_del, "CHECK": commands.cmd_check,
                "STATUS": commands.cmd_status, "GC": commands.cmd_gc}
    handlers[command](conf, call, log)
    return ""


def _error_version(stdin: bytes) -> str:
    if len(stdin) > MAX_CONFIG_BYTES:
        return LATEST
    try:
        version = json.loads(stdin.decode("utf-8")).get("cniVersion")
    except Exception:  # undecodable (or too deep) stdin: answer in the newest version
        return LATEST
    return version if version in SUPPORTED_VERSIONS else LATEST


def dispatch(env: Mapping[str, str], stdin: bytes,
             abandoned: Optional[Callable[[], bool]] = None) -> Outcome:
    """One call. `abandoned`, when given, says whether the process that asked for it is gone
    (a resident worker runs calls for other processes): an ADD then undoes itself."""
    command = env.get("CNI_COMMAND", "")
    log = CallLog(command, env.get("CNI_CONTAINERID", ""))
    try:
        if not command:
            raise _env_error("CNI_COMMAND", "is not set")
        if command not in COMMANDS:
            raise _env_error("CNI_COMMAND", f"{command!r} is not one of {', '.join(COMMANDS)}")
        if command == "VERSION":
            return Outcome(0, json.dumps(version_info()) + "\n", "")
        out = _run(command, env, stdin, log, abandoned)
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
