"""The inner loop's NAD check over plain HTTPS, against a real TLS server on 127.0.0.1 that asks
for the kubeconfig's client certificate the way the K3s API server does."""
from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lab.kube import nad_rest

NAD_PATH = nad_rest.nad_path("cnilab", "lab1")


def _cert(name: str, key, issuer=None, issuer_key=None, ca=False, ip=None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .issuer_name(issuer.subject if issuer else
                            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=1))
               .not_valid_after(now + datetime.timedelta(hours=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ip:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def _pem(item) -> bytes:
    if isinstance(item, x509.Certificate):
        return item.public_bytes(serialization.Encoding.PEM)
    return item.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())


class Api(BaseHTTPRequestHandler):
    nads: ClassVar[dict[str, dict]] = {}
    calls: ClassVar[list[str]] = []

    def log_message(self, *args):   # quiet
        pass

    def _answer(self, status: int, doc: dict) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.calls.append(f"GET {self.path}")
        if self.path in self.nads:
            self._answer(200, self.nads[self.path])
        else:
            self._answer(404, {"kind": "Status", "code": 404})

    def do_PUT(self):
        doc = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.calls.append(f"PUT {self.path} {doc['metadata'].get('resourceVersion')}")
        doc["metadata"]["resourceVersion"] = str(int(doc["metadata"]["resourceVersion"]) + 1)
        self.nads[self.path] = doc
        self._answer(200, doc)


@pytest.fixture
def api(tmp_path):
    """A TLS API on 127.0.0.1 requiring client certificates, and a kubeconfig for it."""
    ca_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _cert("ca", ca_key, ca=True)
    server = _cert("server", server_key, ca, ca_key, ip="127.0.0.1")
    client = _cert("system:admin", client_key, ca, ca_key)
    (tmp_path / "server.pem").write_bytes(_pem(server) + _pem(server_key))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cadata=_pem(ca).decode())
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(tmp_path / "server.pem")
    Api.nads, Api.calls = {}, []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()

    def kubeconfig(cert=client, key=client_key) -> Path:
        b64 = lambda data: base64.b64encode(data).decode()   # noqa: E731
        doc = {"apiVersion": "v1", "kind": "Config", "current-context": "cnilab-lab1",
               "clusters": [{"name": "cnilab-lab1", "cluster": {
                   "server": f"https://127.0.0.1:{httpd.server_address[1]}",
                   "certificate-authority-data": b64(_pem(ca))}}],
               "users": [{"name": "cnilab-lab1", "user": {
                   "client-certificate-data": b64(_pem(cert)),
                   "client-key-data": b64(_pem(key))}}],
               "contexts": [{"name": "cnilab-lab1",
                             "context": {"cluster": "cnilab-lab1", "user": "cnilab-lab1"}}]}
        path = tmp_path / "state" / "kubeconfig"
        path.parent.mkdir(exist_ok=True, mode=0o700)
        path.write_text(yaml.safe_dump(doc))
        return path

    yield kubeconfig
    httpd.shutdown()
    httpd.server_close()


def _nad(config: str) -> dict:
    return {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": "lab1", "namespace": "cnilab"}, "spec": {"config": config}}


def test_an_unchanged_nad_costs_one_get(api):
    Api.nads[NAD_PATH] = {**_nad("{}"), "metadata": {**_nad("{}")["metadata"],
                                                     "resourceVersion": "7"}}
    path = api()
    assert nad_rest.update_nad(path, _nad("{}")) == "unchanged"
    assert Api.calls == [f"GET {NAD_PATH}"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["kubeconfig"]   # no key left


def test_a_changed_nad_is_replaced_at_its_resource_version(api):
    Api.nads[NAD_PATH] = {**_nad("{}"), "metadata": {**_nad("{}")["metadata"],
                                                     "resourceVersion": "7"}}
    assert nad_rest.update_nad(api(), _nad('{"mtu": 1400}')) == "updated"
    assert Api.calls == [f"GET {NAD_PATH}", f"PUT {NAD_PATH} 7"]
    assert Api.nads[NAD_PATH]["spec"] == {"config": '{"mtu": 1400}'}


def test_no_answer_where_the_full_client_must_decide(api, tmp_path):
    with pytest.raises(nad_rest.Unanswered, match="HTTP 404"):   # not made yet
        nad_rest.update_nad(api(), _nad("{}"))
    stranger = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(nad_rest.Unanswered):     # a certificate the server does not trust
        nad_rest.update_nad(api(_cert("x", stranger), stranger), _nad("{}"))
    broken = tmp_path / "broken"
    broken.write_text("clusters: 3\n")
    with pytest.raises(nad_rest.Unanswered, match="kubeconfig"):
        nad_rest.update_nad(broken, _nad("{}"))


def test_an_answer_without_a_resource_version_is_left_to_the_client(api):
    Api.nads[NAD_PATH] = _nad("{}")             # no metadata.resourceVersion to PUT against
    with pytest.raises(nad_rest.Unanswered, match="resourceVersion"):
        nad_rest.update_nad(api(), _nad('{"mtu": 1400}'))
    assert Api.calls == [f"GET {NAD_PATH}"]
