"""Connected K3s installs behind a mirror, for real: curl fetches from a real HTTP server on
127.0.0.1 laid out as the release pages, sha256sum checks the file, and only a binary with the
pinned checksum lands. The install runs in a private mount namespace with a tmpfs over
/usr/local/bin, so this host's own files never change."""
from __future__ import annotations

import functools
import hashlib
import http.server
import subprocess
import threading
from pathlib import Path

import pytest

from lab.kube import cmdlines

pytestmark = pytest.mark.root
VERSION = "v1.35.0+k3s1"


@pytest.fixture
def mirror(tmp_path):
    """An HTTP server serving <root>/<version>/k3s (a stand-in binary); yields (base URL, the
    binary's sha256)."""
    root = tmp_path / "mirror"
    (root / VERSION).mkdir(parents=True)
    binary = root / VERSION / "k3s"
    binary.write_bytes(b"#!/bin/sh\necho 'k3s version v1.35.0+k3s1 (stand-in)'\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", \
            hashlib.sha256(binary.read_bytes()).hexdigest()
    finally:
        server.shutdown()
        server.server_close()


def install(script: str) -> subprocess.CompletedProcess[str]:
    wrapped = (f"set -e; mount -t tmpfs tmpfs /usr/local/bin; rc=0; ( {script} ) || rc=$?; "
               "ls /usr/local/bin; exit $rc")
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                           wrapped], capture_output=True, text=True, timeout=60)


def test_the_pinned_binary_is_installed_from_the_mirror(mirror):
    base, digest = mirror
    done = install(cmdlines.install_binary_connected(VERSION, "amd64", digest, base))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["k3s"]


def test_a_binary_with_another_checksum_is_refused_and_removed(mirror):
    base, _digest = mirror
    wrong = hashlib.sha256(b"not it").hexdigest()
    done = install(cmdlines.install_binary_connected(VERSION, "amd64", wrong, base))
    assert done.returncode == 1
    assert f"checksum mismatch for K3s {VERSION} (amd64): expected {wrong}" in done.stderr
    assert done.stdout.split() == []            # neither the download nor the binary stays


def test_a_mirror_without_the_release_fails_naming_nothing_installed(mirror):
    base, digest = mirror
    done = install(cmdlines.install_binary_connected("v1.34.1+k3s1", "amd64", digest, base))
    assert done.returncode != 0
    assert "404" in done.stderr
    assert done.stdout.split() == []


def test_the_mirror_layout_is_the_release_pages_one():
    assert cmdlines.download_url(VERSION, "amd64", "http://m") == "http://m/v1.35.0%2Bk3s1/k3s"
    assert Path(cmdlines.K3S_BIN) == Path("/usr/local/bin/k3s")
