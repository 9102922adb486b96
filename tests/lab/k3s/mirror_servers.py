"""Real mirror servers on a lab network, as a corporate mirror would serve a connected lab:
Debian's docker-registry (distribution 2.8) holding images under the names the lab asks for, and
an HTTP server laid out as K3s's release pages holding a k3s binary. Both listen only on the
address given (the lab network's host side): nothing else can reach them."""
from __future__ import annotations

import functools
import http.server
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lab.kube.pod_images import PodmanStorage

REGISTRY_PORT = 5000
DOWNLOAD_PORT = 8080


@dataclass(frozen=True)
class Mirrors:
    registry: str          # http://<host>:5000: k3s.registry_mirror
    download_base: str     # http://<host>:8080: k3s.download_base


def _registry_config(root: Path, address: str) -> str:
    return (f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root}\n"
            f"http:\n  addr: {address}:{REGISTRY_PORT}\n")


def _wait_listening(host: str, port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(1)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on {host}:{port} after {seconds:.0f}s")


def push_images(images: Mapping[Path, Sequence[str]], registry: str, work: Path) -> None:
    """Loads each docker-archive tarball into private podman storage and pushes it under every
    name given (repository:tag, no registry host) to the registry at host:port."""
    storage = PodmanStorage(work / "storage", Path(tempfile.mkdtemp(prefix="cnilab-podman-")))
    try:
        for tarball, names in images.items():
            loaded = subprocess.run(storage.argv("load", "-q", "-i", str(tarball)),
                                    capture_output=True, text=True, check=True, timeout=600)
            ref = loaded.stdout.strip().rsplit(": ", 1)[-1]
            for name in names:
                subprocess.run(storage.argv("push", "--tls-verify=false", "-q", ref,
                                            f"docker://{registry}/{name}"),
                               capture_output=True, text=True, check=True, timeout=600)
    finally:
        shutil.rmtree(storage.runroot, ignore_errors=True)


class MirrorServers:
    """The registry's storage is filled first on 127.0.0.1 (prepare), then both servers start
    on the lab network's host address once it exists (start), so nothing listens anywhere else
    while the lab runs. stop() ends both; every step may be repeated."""

    def __init__(self, work: Path, images: Mapping[Path, Sequence[str]], binary: Path,
                 version: str) -> None:
        self.work, self.images, self.binary, self.version = work, images, binary, version
        self._registry: subprocess.Popen[bytes] | None = None
        self._downloads: http.server.ThreadingHTTPServer | None = None
        self.mirrors: Mirrors | None = None

    def _serve_registry(self, host: str) -> None:
        config = self.work / f"registry-{host}.yml"
        config.write_text(_registry_config(self.work / "registry", host))
        log = (self.work / "registry.log").open("a")
        self._registry = subprocess.Popen(["docker-registry", "serve", str(config)],
                                          stdout=subprocess.DEVNULL, stderr=log)
        log.close()
        _wait_listening(host, REGISTRY_PORT)

    def _stop_registry(self) -> None:
        if self._registry is not None:
            self._registry.terminate()
            try:
                self._registry.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._registry.kill()
                self._registry.wait()
            self._registry = None

    def prepare(self) -> None:
        releases = self.work / "releases" / self.version
        releases.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.binary, releases / "k3s")
        self._serve_registry("127.0.0.1")
        try:
            push_images(self.images, f"127.0.0.1:{REGISTRY_PORT}", self.work)
        finally:
            self._stop_registry()

    def start(self, host: str) -> Mirrors:
        self._serve_registry(host)
        handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                                    directory=str(self.work / "releases"))
        self._downloads = http.server.ThreadingHTTPServer((host, DOWNLOAD_PORT), handler)
        threading.Thread(target=self._downloads.serve_forever, daemon=True).start()
        self.mirrors = Mirrors(f"http://{host}:{REGISTRY_PORT}",
                               f"http://{host}:{DOWNLOAD_PORT}")
        return self.mirrors

    def stop(self) -> None:
        if self._downloads is not None:
            self._downloads.shutdown()
            self._downloads.server_close()
            self._downloads = None
        self._stop_registry()


@contextmanager
def mirror_servers(host: str, work: Path, images: Mapping[Path, Sequence[str]],
                   binary: Path, version: str) -> Iterator[Mirrors]:
    """Both servers on host (an address of this machine), stopped after."""
    servers = MirrorServers(work, images, binary, version)
    servers.prepare()
    try:
        yield servers.start(host)
    finally:
        servers.stop()
