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


@contextmanager
def mirror_servers(host: str, work: Path, images: Mapping[Path, Sequence[str]],
                   binary: Path, version: str) -> Iterator[Mirrors]:
    """Both servers on host (an address of this machine on the lab network), stopped after."""
    releases = work / "releases"
    (releases / version).mkdir(parents=True)
    shutil.copyfile(binary, releases / version / "k3s")
    config = work / "registry.yml"
    config.write_text(_registry_config(work / "registry", host))
    registry = subprocess.Popen(["docker-registry", "serve", str(config)],
                                stdout=subprocess.DEVNULL, stderr=(work / "registry.log").open("w"))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(releases))
    downloads = http.server.ThreadingHTTPServer((host, DOWNLOAD_PORT), handler)
    thread = threading.Thread(target=downloads.serve_forever, daemon=True)
    thread.start()
    try:
        _wait_listening(host, REGISTRY_PORT)
        push_images(images, f"{host}:{REGISTRY_PORT}", work)
        yield Mirrors(f"http://{host}:{REGISTRY_PORT}", f"http://{host}:{DOWNLOAD_PORT}")
    finally:
        downloads.shutdown()
        downloads.server_close()
        registry.terminate()
        try:
            registry.wait(timeout=10)
        except subprocess.TimeoutExpired:
            registry.kill()
            registry.wait()
