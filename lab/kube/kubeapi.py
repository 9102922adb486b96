"""The Kubernetes API from the harness: the few calls cnilab makes, through the kubernetes client.

Nothing else in cnilab imports `kubernetes`: the scenario driver (lab.drivers.kube_cluster) and the
inner-loop deploy (lab.kube.deploy) both come through here. Calls straight to the API from the
harness take tens of milliseconds where `k3s kubectl` on a node costs a process start (3 s on a
TCG guest).
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lab.api import CommandResult, LabError

MANAGED_BY = {"app.kubernetes.io/managed-by": "cnilab"}
ERROR_CHANNEL = 3   # the exec stream's status channel (kubernetes.stream.ws_client)
NAD_GROUP, NAD_VERSION, NAD_PLURAL = "k8s.cni.cncf.io", "v1", "network-attachment-definitions"
# Answers of an API server that is alive but overloaded (a K3s server starved by TCG guests
# answers 504 "request did not complete within the allotted timeout"): asked again, not failed.
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})


class KubeApi:
    """The Kubernetes calls cnilab makes, with the harness's kubeconfig."""

    def __init__(self, kubeconfig_path: Path, timeout: float = 30,
                 retry_for: float = 180) -> None:
        from kubernetes import client, config
        from urllib3.exceptions import HTTPError as TransportError

        self._client = config.new_client_from_config(config_file=str(kubeconfig_path))
        self.core = client.CoreV1Api(self._client)
        self.custom = client.CustomObjectsApi(self._client)
        self._api_exception = client.exceptions.ApiException
        self._transport_error = TransportError
        self.timeout = timeout       # per request: no call waits forever on a dead API
        self.retry_for = retry_for   # how long an overloaded API is asked again, per call

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, creates: bool = False,
              **kwargs: Any) -> Any:
        """fn(*args) with a request timeout; transient answers (TRANSIENT_STATUSES, a dropped
        or timed-out connection) asked again with backoff until `retry_for` has passed, then
        one error naming the call and the last answer. For a create (`creates`), a 409 on a
        retry is success: the first try got through and only its answer was lost."""
        deadline = time.monotonic() + self.retry_for
        pause = 1.0
        retried = False
        while True:
            try:
                return fn(*args, _request_timeout=self.timeout, **kwargs)
            except self._api_exception as e:
                if creates and retried and e.status == 409:
                    return None
                if e.status not in TRANSIENT_STATUSES:
                    raise
                last = f"{e.status} {e.reason}"
                lost: Exception = e
            except self._transport_error as e:
                last, lost = f"{type(e).__name__}: {e}", e
            if time.monotonic() + pause > deadline:
                raise LabError(f"the Kubernetes API did not answer {what} within "
                               f"{self.retry_for:.0f}s (last: {last})",
                               hint="the API server is overloaded or down: `lab status`, "
                                    "then the server's `journalctl -u k3s`") from lost
            time.sleep(pause)
            pause = min(pause * 2, 10.0)
            retried = True

    def ensure_namespace(self, name: str) -> None:
        try:
            # The client serializes plain dicts as they are; its stubs only name the models.
            body: Any = {"apiVersion": "v1", "kind": "Namespace",
                         "metadata": {"name": name, "labels": MANAGED_BY}}
            self._call(f"create namespace {name}", self.core.create_namespace, body)
        except self._api_exception as e:
            if e.status != 409:
                raise

    def create_pod(self, manifest: dict[str, Any]) -> None:
        body: Any = manifest
        meta = manifest["metadata"]
        try:
            self._call(f"create pod {meta['namespace']}/{meta['name']}",
                       self.core.create_namespaced_pod, meta["namespace"], body, creates=True)
        except self._api_exception as e:
            if e.status == 409:
                raise LabError(f"pod {meta['namespace']}/{meta['name']} already exists",
                               hint="delete it first, or give the new pod another name") from None
            raise

    def read_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            pod = self._call(f"read pod {namespace}/{name}", self.core.read_namespaced_pod,
                             name, namespace)
        except self._api_exception as e:
            if e.status == 404:
                return None
            raise
        return dict(self._client.sanitize_for_serialization(pod))

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        pods = self._call(f"list pods in {namespace}", self.core.list_namespaced_pod,
                          namespace, label_selector=selector)
        return [dict(self._client.sanitize_for_serialization(p)) for p in pods.items]

    def delete_pod(self, namespace: str, name: str) -> None:
        # A 1 s grace, not 0: grace 0 is a force delete that drops the object before the
        # kubelet has even stopped the sandbox (its CNI DEL comes minutes later).
        try:
            self._call(f"delete pod {namespace}/{name}", self.core.delete_namespaced_pod,
                       name, namespace, grace_period_seconds=1)
        except self._api_exception as e:
            if e.status != 404:
                raise

    def pod_events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        events = self._call(
            f"list the events of pod {namespace}/{name}", self.core.list_namespaced_event,
            namespace, field_selector=f"involvedObject.kind=Pod,involvedObject.name={name}")
        found = [dict(self._client.sanitize_for_serialization(e)) for e in events.items]
        return sorted(found, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime")
                                               or ""))

    def exec(self, namespace: str, name: str, argv: Sequence[str],
             timeout: float) -> CommandResult:
        from kubernetes.stream import stream

        resp = stream(self.core.connect_get_namespaced_pod_exec, name, namespace,
                      command=list(argv), stdout=True, stderr=True, stdin=False, tty=False,
                      _preload_content=False)
        try:
            resp.run_forever(timeout=timeout)
            out, err = resp.read_stdout() or "", resp.read_stderr() or ""
            status = resp.read_channel(ERROR_CHANNEL)  # buffered even once the socket closed
        finally:
            resp.close()
        rc, why = exec_status(status)
        if rc is None:
            return CommandResult(tuple(argv), 124, out, err + f"\ntimed out after {timeout}s")
        return CommandResult(tuple(argv), rc, out, err + (("\n" if err else "") + why
                                                          if why else ""))

    def close(self) -> None:
        self._client.close()

    # -- NetworkAttachmentDefinitions --------------------------------------------------------
    def read_nad(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            found = self._call(f"read NetworkAttachmentDefinition {namespace}/{name}",
                               self.custom.get_namespaced_custom_object,
                               NAD_GROUP, NAD_VERSION, namespace, NAD_PLURAL, name)
        except self._api_exception as e:
            if e.status == 404:
                return None
            raise
        return found if isinstance(found, dict) else None

    def apply_nad(self, manifest: dict[str, Any]) -> str:
        """Creates or updates a NAD; returns "created", "updated" or "unchanged" (a plugin
        change leaves the NAD as it is, so the inner loop costs one GET here)."""
        meta = manifest["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        current = self.read_nad(namespace, name)
        body: Any = manifest
        if current is None:
            self.ensure_namespace(namespace)
            self._call(f"create NetworkAttachmentDefinition {namespace}/{name}",
                       self.custom.create_namespaced_custom_object,
                       NAD_GROUP, NAD_VERSION, namespace, NAD_PLURAL, body, creates=True)
            return "created"
        if current.get("spec") == manifest["spec"]:
            return "unchanged"
        updated = {**manifest, "metadata": {
            **meta, "resourceVersion": current["metadata"]["resourceVersion"]}}
        self._call(f"update NetworkAttachmentDefinition {namespace}/{name}",
                   self.custom.replace_namespaced_custom_object,
                   NAD_GROUP, NAD_VERSION, namespace, NAD_PLURAL, name, updated)
        return "updated"


def exec_status(channel: str) -> tuple[int | None, str]:
    """(exit code, why) from the API's exec status channel (a v1 Status). The kubernetes
    client's own `returncode` assumes a NonZeroExitCode status and raises ValueError on every
    other failure (a command missing from the image is "OCI runtime exec failed")."""
    if not channel:
        return None, ""
    try:
        doc = json.loads(channel)
    except ValueError:
        return 1, channel.strip()
    if doc.get("status") == "Success":
        return 0, ""
    for cause in (doc.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            try:
                return int(cause.get("message", "1")), ""
            except ValueError:
                break
    message = str(doc.get("message") or channel).strip()
    # runc's words for a command the image does not have: the shell's "not found" code.
    missing = "executable file not found" in message or "no such file or directory" in message
    return (127 if missing else 126), message
