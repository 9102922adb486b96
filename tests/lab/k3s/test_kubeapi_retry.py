"""KubeApi against a local HTTP server playing an overloaded API server: the real kubernetes
client, real requests; 504s and lost answers are asked again, within a deadline."""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lab.api import LabError
from lab.kube.kubeapi import KubeApi

TIMEOUT_BODY = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "Timeout: request did not complete within the allotted timeout",
                "reason": "Timeout", "code": 504}


class FakeServer:
    """Answers each request with the next (status, body) of `script`, then the last one."""

    def __init__(self) -> None:
        self.script: list[tuple[int, dict]] = []
        self.requests: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                owner.requests.append(f"{self.command} {self.path}")
                status, body = owner.script.pop(0) if len(owner.script) > 1 else owner.script[0]
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PUT = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}"


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeServer()
    yield fake
    fake.http.shutdown()
    fake.http.server_close()


def api_for(server: FakeServer, tmp_path: Path, retry_for: float) -> KubeApi:
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "c",
              "clusters": [{"name": "k", "cluster": {"server": server.url}}],
              "users": [{"name": "u", "user": {}}],
              "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}]}
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))
    return KubeApi(path, timeout=5, retry_for=retry_for)


POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns"}}


def test_an_overloaded_api_is_asked_again(server, tmp_path, monkeypatch):
    monkeypatch.setattr("lab.kube.kubeapi.time.sleep", lambda s: None)
    server.script = [(504, TIMEOUT_BODY), (504, TIMEOUT_BODY), (200, {**POD, "status": {}})]
    api = api_for(server, tmp_path, retry_for=60)
    pod = api.read_pod("ns", "p")
    assert pod is not None and pod["metadata"]["name"] == "p"
    assert server.requests == ["GET /api/v1/namespaces/ns/pods/p"] * 3


def test_a_create_whose_answer_was_lost_is_not_an_error(server, tmp_path, monkeypatch):
    monkeypatch.setattr("lab.kube.kubeapi.time.sleep", lambda s: None)
    exists = {**TIMEOUT_BODY, "reason": "AlreadyExists", "code": 409, "message": "exists"}
    server.script = [(504, TIMEOUT_BODY), (409, exists)]
    api = api_for(server, tmp_path, retry_for=60)
    api.create_pod(POD)      # the first POST got through; the 409 says so
    assert len(server.requests) == 2


def test_a_create_that_meets_an_old_pod_still_says_so(server, tmp_path):
    exists = {**TIMEOUT_BODY, "reason": "AlreadyExists", "code": 409, "message": "exists"}
    server.script = [(409, exists)]
    with pytest.raises(LabError, match="already exists"):
        api_for(server, tmp_path, retry_for=60).create_pod(POD)


def test_an_api_that_stays_overloaded_ends_in_one_clear_error(server, tmp_path, monkeypatch):
    clock = [0.0]
    monkeypatch.setattr("lab.kube.kubeapi.time.monotonic", lambda: clock[0])
    monkeypatch.setattr("lab.kube.kubeapi.time.sleep", lambda s: clock.__setitem__(0, clock[0] + s))
    server.script = [(504, TIMEOUT_BODY)]
    with pytest.raises(LabError, match=r"did not answer read pod ns/p within 30s "
                                       r"\(last: 504 Gateway Timeout\)"):
        api_for(server, tmp_path, retry_for=30).read_pod("ns", "p")
    assert 3 <= len(server.requests) <= 6      # backoff, not a busy loop


def test_a_real_refusal_is_not_retried(server, tmp_path):
    server.script = [(403, {**TIMEOUT_BODY, "code": 403, "reason": "Forbidden"})]
    from kubernetes.client.exceptions import ApiException

    with pytest.raises(ApiException):
        api_for(server, tmp_path, retry_for=60).list_pods("ns", "a=b")
    assert len(server.requests) == 1
