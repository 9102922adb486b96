"""The inner loop's NetworkAttachmentDefinition check: one plain HTTPS GET (and a PUT when it
changed) with the standard library and the lab's own kubeconfig.

`lab deploy` checks the NAD while it uploads the plugin to every node in threads. The
kubernetes client would spend about a second importing and setting itself up in the same
interpreter, and the SSH threads beside it wait for the GIL meanwhile. Everything else (making
the NAD, its namespace, pods) stays with lab.kube.kubeapi, which is also the answer whenever this
path cannot give one.
"""
from __future__ import annotations

import base64
import http.client
import json
import ssl
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml  # PyYAML: comes with the kubernetes client (the k8s extra)

from lab.kube.kubeapi import NAD_GROUP, NAD_PLURAL, NAD_VERSION


class Unanswered(Exception):
    """This path has no answer (no such NAD, other credentials, the API unreachable...)."""


def _current(doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The current context's cluster and user entries."""
    context = next(c["context"] for c in doc["contexts"] if c["name"] == doc["current-context"])
    cluster = next(c["cluster"] for c in doc["clusters"] if c["name"] == context["cluster"])
    user = next(u["user"] for u in doc["users"] if u["name"] == context["user"])
    return cluster, user


class NadRest:
    """An HTTPS connection to the API server with the kubeconfig's client certificate."""

    def __init__(self, kubeconfig_path: Path, timeout: float = 5) -> None:
        try:
            cluster, user = _current(yaml.safe_load(kubeconfig_path.read_text()))
            ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
            cert = base64.b64decode(user["client-certificate-data"])
            key = base64.b64decode(user["client-key-data"])
            url = urlsplit(cluster["server"])
        except (OSError, ValueError, KeyError, TypeError, StopIteration, yaml.YAMLError) as e:
            raise Unanswered(f"kubeconfig: {e}") from None
        if url.scheme != "https" or not url.hostname:
            raise Unanswered(f"server {cluster['server']!r} is not https")
        context = ssl.create_default_context(cadata=ca)
        # load_cert_chain reads files only: a private temporary directory beside the
        # kubeconfig (the harness state dir), gone again at once
        with tempfile.TemporaryDirectory(dir=kubeconfig_path.parent) as tmp:
            (Path(tmp) / "cert.pem").write_bytes(cert)
            (Path(tmp) / "key.pem").write_bytes(key)
            try:
                context.load_cert_chain(Path(tmp) / "cert.pem", Path(tmp) / "key.pem")
            except (ssl.SSLError, OSError) as e:
                raise Unanswered(f"client certificate: {e}") from None
        self.connection = http.client.HTTPSConnection(url.hostname, url.port or 443,
                                                      context=context, timeout=timeout)

    def request(self, method: str, path: str,
                body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            self.connection.request(method, path, body=None if body is None else
                                    json.dumps(body), headers={
                                        "Accept": "application/json",
                                        "Content-Type": "application/json"})
            response = self.connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as e:
            raise Unanswered(f"{method} {path}: {e}") from None
        if response.status != 200:
            raise Unanswered(f"{method} {path}: HTTP {response.status}")
        try:
            doc = json.loads(data)
        except ValueError:
            raise Unanswered(f"{method} {path}: not JSON") from None
        if not isinstance(doc, dict):
            raise Unanswered(f"{method} {path}: not a JSON object")
        return doc

    def close(self) -> None:
        self.connection.close()


def nad_path(namespace: str, name: str) -> str:
    return f"/apis/{NAD_GROUP}/{NAD_VERSION}/namespaces/{namespace}/{NAD_PLURAL}/{name}"


def update_nad(kubeconfig_path: Path, manifest: dict[str, Any], timeout: float = 5) -> str:
    """"unchanged" when the NAD there has the manifest's spec, "updated" after replacing it;
    Unanswered when this path cannot tell (a NAD not made yet among others)."""
    meta = manifest["metadata"]
    path = nad_path(meta["namespace"], meta["name"])
    api = NadRest(kubeconfig_path, timeout)
    try:
        current = api.request("GET", path)
        if current.get("spec") == manifest["spec"]:
            return "unchanged"
        version = (current.get("metadata") or {}).get("resourceVersion")
        if not version:
            raise Unanswered(f"GET {path}: no metadata.resourceVersion")
        api.request("PUT", path, {**manifest, "metadata": {**meta, "resourceVersion": version}})
        return "updated"
    finally:
        api.close()
