"""Delegated IPAM: run the plugin named in `ipam.type` from CNI_PATH, as the spec says.

Any IPAM plugin works. Versions are negotiated: a 1.1.0 network is sent to IPAM as 1.0.0 first
(the documents are the same, and Debian's host-local stops at 1.0.0); if IPAM still answers
"incompatible version", its VERSION answer picks the newest version both sides speak.
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import select
import subprocess
import threading
import time
from collections.abc import Mapping
from typing import Any, Optional

from plugin.cni import result
from plugin.cni.deadline import Deadline
from plugin.cni.errors import (
    INCOMPATIBLE_VERSION,
    INVALID_CONFIG,
    IO_FAILURE,
    IPAM_FAILURE,
    CniError,
)

IPAM_TIMEOUT = 60.0  # host-local waits on its lock file; a hung IPAM must not hang the runtime
REAP_TIMEOUT = 5.0  # after a kill: a plugin's stray child holding its pipes cannot hold us
# Config documents up to this size go into the pipe at once (it holds 64 KiB); a larger one
# is fed by a thread so that an IPAM plugin writing before it reads cannot deadlock us.
PIPE_AT_ONCE = 32768


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



class _Running:
    """One IPAM plugin process, started now and answered later, so ADD, DEL and CHECK can do
    their netlink work while the plugin starts (host-local: ~6 ms of Go runtime start).

    Started with close_fds=False so that subprocess uses posix_spawn (vfork-like: ~1 ms less
    than its fork_exec path here); nothing leaks into the plugin, as every descriptor Python
    makes is close-on-exec. Not subprocess.run(timeout=...): on Python 3.9-3.11 its wait polls
    waitpid with sleeps. The pipes and a pidfd are polled until EOF and exit, against one
    deadline; no timer thread.
    """

    def __init__(self, ipam: Ipam, command: str, argv: list[str], stdin: bytes,
                 env: Mapping[str, str], deadline: Deadline, hold: bool = False) -> None:
        self.ipam = ipam
        self.command = command
        self.timed_out = False
        self.deadline = min(time.monotonic() + IPAM_TIMEOUT, deadline.at)
        self.allowed = max(0.0, self.deadline - time.monotonic())
        read_end, write_end = os.pipe()
        try:
            self.process = subprocess.Popen(argv, stdin=read_end, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, env=env, bufsize=0,
                                            close_fds=False)
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        self.feeder: Optional[threading.Thread] = None
        self.stdin = stdin
        self.held: Optional[int] = write_end
        if not hold:
            self.release()

    def release(self) -> None:
        """Gives the plugin its config (once): until then it has not started its work."""
        write_end, self.held = self.held, None
        if write_end is None:
            return
        if len(self.stdin) <= PIPE_AT_ONCE:
            _feed(write_end, self.stdin)
        else:
            self.feeder = threading.Thread(target=_feed, args=(write_end, self.stdin),
                                           daemon=True)
            self.feeder.start()

    def discard(self) -> bool:
        """Stops a plugin still waiting for its config; True if it was (it did nothing)."""
        write_end, self.held = self.held, None
        if write_end is None:
            return False
        os.close(write_end)
        self.process.kill()
        _reap(self.process)
        return True

    def answer(self) -> Any:
        """Waits for the plugin: its decoded JSON answer, or the CniError its failure means."""
        self.release()
        try:
            out, err = self._output()
        finally:
            if self.feeder is not None:
                self.feeder.join(REAP_TIMEOUT)
        return self.ipam.decode(self.command, self.process.returncode, out, err,
                                self.allowed if self.timed_out else None)

    def _output(self) -> tuple[bytes, bytes]:
        p = self.process
        try:
            pidfd = os.pidfd_open(p.pid)  # Linux 5.3+
        except (AttributeError, OSError):
            try:
                return p.communicate(timeout=max(0.0, self.deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.timed_out = True
                p.kill()
                _reap(p)
                return b"", b""
        assert p.stdout is not None and p.stderr is not None
        out_fd, err_fd = p.stdout.fileno(), p.stderr.fileno()
        chunks: dict[int, list[bytes]] = {out_fd: [], err_fd: []}
        try:
            poller = select.poll()
            for fd in (*chunks, pidfd):
                poller.register(fd, select.POLLIN)
            waiting = {*chunks, pidfd}
            while waiting:
                remaining = self.deadline - time.monotonic()
                if remaining <= 0:
                    self.timed_out = True
                    p.kill()
                    break
                for fd, _event in poller.poll(remaining * 1000):
                    data = os.read(fd, 65536) if fd != pidfd else b""
                    if data:
                        chunks[fd].append(data)
                    else:  # EOF, or the plugin exited
                        poller.unregister(fd)
                        waiting.discard(fd)
        finally:
            os.close(pidfd)
            p.stdout.close()
            p.stderr.close()
        p.wait()  # it has exited (or was just killed): no sleeping
        return b"".join(chunks[out_fd]), b"".join(chunks[err_fd])


def _reap(p: subprocess.Popen[bytes]) -> None:
    """Waits for a killed plugin, never for a child of its that kept the pipes open."""
    try:
        p.communicate(timeout=REAP_TIMEOUT)
    except subprocess.TimeoutExpired:
        p.wait()


def _feed(fd: int, data: bytes) -> None:
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except BrokenPipeError:
        pass  # the plugin exited without reading: its answer says why
    finally:
        os.close(fd)


class Ipam:
    """One IPAM plugin as this call sees it: where it is, and the env to run it with."""

    def __init__(self, ipam_conf: dict[str, Any], env: Mapping[str, str],
                 deadline: Deadline) -> None:
        self.conf = ipam_conf
        self.type = str(ipam_conf["type"])
        self.env = dict(env)
        self.deadline = deadline
        self.path = find_plugin(self.type, self.env.get("CNI_PATH", ""))

    def with_deadline(self, deadline: Deadline) -> Ipam:
        """The same plugin, its runs bounded by `deadline` (undoing a failed ADD)."""
        other = copy.copy(self)
        other.deadline = deadline
        return other

    def _run(self, command: str, stdin: bytes, env_overrides: Mapping[str, str]) -> Any:
        return self._spawn(command, stdin, env_overrides).answer()

    def _spawn(self, command: str, stdin: bytes, env_overrides: Mapping[str, str],
               hold: bool = False) -> _Running:
        env = dict(self.env, CNI_COMMAND=command, **env_overrides)
        try:
            return _Running(self, command, [self.path], stdin, env, self.deadline, hold)
        except OSError as e:
            raise CniError(IO_FAILURE, f"IPAM {self.type} {command}: cannot run {self.path}",
                           str(e)) from None

    def decode(self, command: str, returncode: int, stdout: bytes, stderr: bytes,
               timed_out_after: Optional[float]) -> Any:
        """The answer of one run: decoded JSON, or the CniError its failure means."""
        if timed_out_after is not None:
            raise CniError(IPAM_FAILURE, f"IPAM {self.type} {command}: no answer after "
                                         f"{timed_out_after:.0f}s (killed)",
                           "the call's time is up (CNILAB_CALL_TIMEOUT); retry")
        out = stdout.decode(errors="replace").strip()
        decoded: Any = None
        if out:
            try:
                decoded = json.loads(out)
            except ValueError:
                decoded = None
        if returncode != 0:
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
            err = stderr.decode(errors="replace").strip()
            raise CniError(IPAM_FAILURE, f"IPAM {self.type} {command} failed "
                                         f"(exit {returncode})", (out + "\n" + err).strip())
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
        return self.start(command, network, version, env_overrides).answer()

    def start(self, command: str, network: Mapping[str, Any], version: str,
              env_overrides: Optional[Mapping[str, str]] = None,
              hold: bool = False) -> PendingCall:
        """Starts `command` now; PendingCall.answer() waits for it (and negotiates the
        version if the plugin refuses ours). With `hold`, the plugin gets its config only
        at PendingCall.release() (or answer()); discard() stops it unconfigured."""
        overrides = dict(env_overrides or {})
        first = "1.0.0" if version == "1.1.0" and command in ("ADD", "DEL", "CHECK") else version
        running = self._spawn(command, self._stdin(network, first), overrides, hold)
        return PendingCall(self, running, command, network, first, overrides)

    def _retry_at_common_version(self, command: str, network: Mapping[str, Any], first: str,
                                 overrides: Mapping[str, str]) -> Any:
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
        return self.start_add(network, version).result()

    def start_add(self, network: Mapping[str, Any], version: str,
                  hold: bool = False) -> PendingAdd:
        return PendingAdd(self, self.start("ADD", network, version, hold=hold))

    def delete(self, network: Mapping[str, Any], version: str,
               container_id: Optional[str] = None, ifname: Optional[str] = None) -> None:
        """Releases one attachment's addresses (another attachment's when named: GC)."""
        self.start_delete(network, version, container_id, ifname).answer()

    def start_delete(self, network: Mapping[str, Any], version: str,
                     container_id: Optional[str] = None, ifname: Optional[str] = None,
                     ) -> PendingCall:
        overrides: dict[str, str] = {}
        if container_id is not None:
            overrides.update(CNI_CONTAINERID=container_id, CNI_NETNS="")
        if ifname is not None:
            overrides["CNI_IFNAME"] = ifname
        return self.start("DEL", network, version, overrides)


class PendingCall:
    """An IPAM call under way: answer() waits for it, once, and retries at a version both
    sides speak when the plugin answered "incompatible version"."""

    def __init__(self, ipam: Ipam, running: _Running, command: str,
                 network: Mapping[str, Any], first: str, overrides: Mapping[str, str]) -> None:
        self._ipam, self._running, self._command = ipam, running, command
        self._network, self._first, self._overrides = network, first, overrides
        self._done = False
        self._value: Any = None
        self._error: Optional[CniError] = None

    def release(self) -> None:
        self._running.release()

    def discard(self) -> bool:
        return self._running.discard()

    def answer(self) -> Any:
        if not self._done:
            try:
                try:
                    self._value = self._running.answer()
                except CniError as e:
                    if e.code != INCOMPATIBLE_VERSION:
                        raise
                    self._value = self._ipam._retry_at_common_version(
                        self._command, self._network, self._first, self._overrides)
            except CniError as e:
                self._error = e
            self._done = True
        if self._error is not None:
            raise self._error
        return self._value

    def answer_quietly(self) -> None:
        """Waits for the call, whatever it answers (undo: it must be over before the DEL)."""
        with contextlib.suppress(CniError):
            self.answer()


class PendingAdd:
    """An IPAM ADD under way; result() is its normalized result (at least one IP)."""

    def __init__(self, ipam: Ipam, call: PendingCall) -> None:
        self.ipam = ipam
        self.call = call

    def result(self) -> result.Result:
        res = result.normalize(self.call.answer(), f"IPAM {self.ipam.type} result")
        if not res["ips"]:
            raise CniError(IPAM_FAILURE, f"IPAM {self.ipam.type} returned no IP address")
        return res
