"""The mirror servers the connected live labs use, checked on their own: an image pushed under
upstream's name is served by the registry as containerd would ask for it, and the release
pages serve the binary."""
from __future__ import annotations

import json
import shutil
import urllib.request

import pytest
from mirror_servers import mirror_servers

from lab.kube import pod_images

pytestmark = [pytest.mark.root, pytest.mark.slow]


def test_the_registry_serves_our_image_under_upstreams_name(tmp_path):
    if shutil.which("docker-registry") is None:
        pytest.skip("docker-registry is not installed (scripts/setup.sh installs it)")
    built = pod_images.build_pod_images(tmp_path / "images", images=(pod_images.PAUSE_IMAGE,))
    tarball = built[0][1]
    binary = tmp_path / "k3s"
    binary.write_text("#!/bin/sh\necho stand-in\n")
    with mirror_servers("127.0.0.1", tmp_path / "work", {tarball: ["rancher/mirrored-pause:3.6"]},
                        binary, "v1.35.0+k3s1") as m:
        req = urllib.request.Request(
            f"{m.registry}/v2/rancher/mirrored-pause/manifests/3.6",
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json, "
                               "application/vnd.oci.image.manifest.v1+json"})
        with urllib.request.urlopen(req, timeout=10) as answer:
            manifest = json.load(answer)
        assert manifest["layers"], manifest
        url = f"{m.download_base}/v1.35.0%2Bk3s1/k3s"
        with urllib.request.urlopen(url, timeout=10) as answer:
            assert answer.read() == binary.read_bytes()
    with pytest.raises(OSError):          # stopped: nothing listens any more
        urllib.request.urlopen(m.registry + "/v2/", timeout=3)
