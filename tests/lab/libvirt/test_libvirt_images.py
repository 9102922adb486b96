"""Image resolution and downloads: a real HTTP server on localhost stands in for the mirror
(no internet here); resume is a real Range request."""
from __future__ import annotations

import hashlib
import http.server
import re
import threading
from pathlib import Path
from typing import ClassVar

import pytest

from lab.api import LabError
from lab.nodes.providers.libvirt import image_build, images

PAYLOAD = bytes(range(256)) * 4096          # 1 MiB
DIGEST = "sha256:" + hashlib.sha256(PAYLOAD).hexdigest()


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    served: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        if self.path != "/img.qcow2":
            self.send_error(404)
            return
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        start = int(m.group(1)) if m else 0
        self.served.append(self.headers.get("Range", ""))
        body = PAYLOAD[start:]
        self.send_response(206 if m else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    _RangeHandler.served = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_download_verifies_and_caches(server, tmp_path):
    lines: list[str] = []
    dest = images.download(f"{server}/img.qcow2", tmp_path / "img.qcow2", DIGEST,
                           report=lines.append)
    assert dest.read_bytes() == PAYLOAD
    assert any("downloading" in line for line in lines)
    assert not (tmp_path / "img.qcow2.part").exists()
    images.download(f"{server}/img.qcow2", dest, DIGEST)   # cached: no second request
    assert _RangeHandler.served == [""]


def test_download_resumes_a_partial_file(server, tmp_path):
    (tmp_path / "img.qcow2.part").write_bytes(PAYLOAD[:300_000])
    lines: list[str] = []
    dest = images.download(f"{server}/img.qcow2", tmp_path / "img.qcow2", DIGEST,
                           report=lines.append)
    assert dest.read_bytes() == PAYLOAD
    assert _RangeHandler.served == ["bytes=300000-"]
    assert any("resuming" in line for line in lines)


def test_checksum_mismatch_removes_the_download(server, tmp_path):
    wrong = "sha256:" + "0" * 64
    with pytest.raises(LabError, match="checksum mismatch") as err:
        images.download(f"{server}/img.qcow2", tmp_path / "img.qcow2", wrong)
    assert hashlib.sha256(PAYLOAD).hexdigest() in err.value.output
    assert list(tmp_path.iterdir()) == []


def test_unreachable_server_is_a_clear_error(tmp_path):
    with pytest.raises(LabError, match="cannot download") as err:
        images.download("http://127.0.0.1:9/x.qcow2", tmp_path / "x.qcow2", DIGEST, timeout=2)
    assert "lab image build" in err.value.hint


def test_http_url_needs_a_checksum(server, tmp_path):
    with pytest.raises(LabError, match="no checksum"):
        images.resolve_image(f"{server}/img.qcow2", tmp_path)
    image = images.resolve_image(f"{server}/img.qcow2#{DIGEST.replace(':', '=')}", tmp_path)
    assert image.disk == tmp_path / "img.qcow2" and image.format == "raw"


def test_local_path_and_file_url(tmp_path):
    disk = tmp_path / "my.qcow2"
    disk.write_bytes(b"QFI\xfb" + bytes(100))
    assert images.resolve_image(str(disk), tmp_path).format == "qcow2"
    by_url = images.resolve_image(f"file://{disk}", tmp_path)
    assert by_url.disk == disk and by_url.kernel is None
    with pytest.raises(LabError, match="no such file"):
        images.resolve_image(str(tmp_path / "missing.qcow2"), tmp_path)


def _fake_built(cache: Path) -> image_build.BuiltImage:
    built = image_build.image_for(cache, "http://mirror.example/debian")
    built.directory.mkdir(parents=True)
    for f in (built.disk, built.kernel, built.initrd):
        f.write_bytes(b"QFI\xfb")
    built.manifest.write_text("{}")
    return built


def test_built_image_boots_its_own_kernel(tmp_path):
    with pytest.raises(LabError, match="not built yet") as err:
        images.resolve_image("cnilab-debian-12", tmp_path)
    assert "lab image build" in err.value.hint
    built = _fake_built(tmp_path)
    image = images.resolve_image("cnilab-debian-12", tmp_path)
    assert (image.disk, image.kernel, image.initrd) == (built.disk, built.kernel, built.initrd)
    assert image.cmdline.startswith("root=/dev/vda rw console=ttyS0")
    assert "transparent_hugepage=madvise" in image.cmdline   # no khugepaged under TCG
    assert images.resolve_image(str(built.directory), tmp_path).kernel == built.kernel
    assert ("cnilab-debian-12-" in images.cached_images(tmp_path)[0][0])


def test_catalog_pins_official_urls_and_checksums():
    for entry in images.CATALOG.values():
        assert entry.url.startswith(("https://cloud.debian.org/", "https://cloud-images.ubuntu"))
        algorithm, value = images.split_digest(entry.digest)
        assert len(value) == {"sha256": 64, "sha512": 128}[algorithm]
        assert re.fullmatch(r"[0-9a-f]+", value)
