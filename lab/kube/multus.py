"""Multus as Python data: the NAD CRD, RBAC, the upstream daemonsets on K3s's paths, host files.

The daemonsets follow upstream's deployments/multus-daemonset{,-thick}.yml with the stock
/opt/cni/bin and /etc/cni/net.d replaced by the directories K3s's containerd really uses (read on
the node, lab.kube.paths). Thick mode needs the CNI bin dir at the same path inside the pod as on
the host: delegates are run chrooted into the host. Host mode (air-gapped runners) needs no
image: the harness does what the thin entrypoint would (00-multus.conf + multus.kubeconfig).
"""
from __future__ import annotations

import base64
import json
from typing import Any

from lab.config.k3s import MultusSettings
from lab.kube.paths import CniDirs

NAMESPACE = "kube-system"
NAME = "multus"
DAEMONSET = "kube-multus-ds"
TOKEN_SECRET = "multus-cnilab-token"
CRD_NAME = "network-attachment-definitions.k8s.cni.cncf.io"
MULTUS_CONF = "00-multus.conf"
LABELS = {"tier": "node", "app": "multus", "name": "multus"}
Manifest = dict[str, Any]


def crd() -> Manifest:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": "k8s.cni.cncf.io",
            "scope": "Namespaced",
            "names": {"plural": "network-attachment-definitions",
                      "singular": "network-attachment-definition",
                      "kind": "NetworkAttachmentDefinition",
                      "shortNames": ["net-attach-def", "nad"]},
            "versions": [{
                "name": "v1", "served": True, "storage": True,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": {"type": "object",
                                 "properties": {"config": {"type": "string"}}},
                    },
                }},
            }],
        },
    }


def rbac() -> list[Manifest]:
    """What Multus reads and writes: NADs, pods (network-status), events."""
    rules = [
        {"apiGroups": ["k8s.cni.cncf.io"], "resources": ["*"], "verbs": ["*"]},
        {"apiGroups": [""], "resources": ["pods", "pods/status"],
         "verbs": ["get", "list", "update", "watch"]},
        {"apiGroups": ["", "events.k8s.io"], "resources": ["events"],
         "verbs": ["create", "patch", "update"]},
    ]
    return [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": NAME}, "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": NAME},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": NAME},
         "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": NAME, "namespace": NAMESPACE}},
    ]


def token_secret() -> Manifest:
    """A long-lived token for the service account (host mode has no pod to mount one into).

    Explicitly created token Secrets work on every release we support (auto-created ones stopped
    in v1.24); the token controller fills in `token` and `ca.crt`.
    """
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
            "metadata": {"name": TOKEN_SECRET, "namespace": NAMESPACE,
                         "annotations": {"kubernetes.io/service-account.name": NAME}}}


def _host_path(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "hostPath": {"path": path}}


def _pod_base(containers: list[dict[str, Any]], init: list[dict[str, Any]],
              volumes: list[dict[str, Any]], host_pid: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "hostNetwork": True,
        "tolerations": [{"operator": "Exists", "effect": "NoSchedule"},
                        {"operator": "Exists", "effect": "NoExecute"}],
        "serviceAccountName": NAME,
        "containers": containers,
        "initContainers": init,
        "terminationGracePeriodSeconds": 10,
        "volumes": volumes,
    }
    if host_pid:
        spec["hostPID"] = True
    return spec


def _daemonset(pod_spec: dict[str, Any]) -> Manifest:
    return {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": DAEMONSET, "namespace": NAMESPACE, "labels": dict(LABELS)},
        "spec": {"selector": {"matchLabels": {"name": "multus"}},
                 "updateStrategy": {"type": "RollingUpdate"},
                 "template": {"metadata": {"labels": dict(LABELS)}, "spec": pod_spec}},
    }


# Upstream's manifests limit the daemon to 50Mi: on K3s v1.35 container nodes the thick
# daemon was OOM-killed five times in four minutes once a few pods started at once (8 ADDs at
# once is a scenario), and every pod on that node then waited. The request stays upstream's;
# the limit leaves room for a burst.
_RESOURCES = {"requests": {"cpu": "100m", "memory": "50Mi"},
              "limits": {"cpu": "500m", "memory": "512Mi"}}
_PRIVILEGED = {"privileged": True}


def _install_init(image: str, command: list[str]) -> dict[str, Any]:
    return {"name": "install-multus-binary", "image": image, "command": command,
            "resources": {"requests": {"cpu": "10m", "memory": "15Mi"}},
            "securityContext": _PRIVILEGED, "terminationMessagePolicy": "FallbackToLogsOnError",
            "volumeMounts": [{"name": "cnibin", "mountPath": "/host/opt/cni/bin",
                              "mountPropagation": "Bidirectional"}]}


def thick_daemonset(settings: MultusSettings, dirs: CniDirs) -> list[Manifest]:
    image = settings.image_ref
    daemon_config = {
        "chrootDir": "/hostroot",
        "cniVersion": "0.3.1",
        "logLevel": "verbose",
        "logToStderr": True,
        "binDir": dirs.bin_dir,
        "cniConfigDir": "/host/etc/cni/net.d",
        "multusAutoconfigDir": "/host/etc/cni/net.d",
        "multusConfigFile": "auto",
        "socketDir": "/host/run/multus/",
    }
    config_map: Manifest = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "multus-daemon-config", "namespace": NAMESPACE,
                     "labels": {"tier": "node", "app": "multus"}},
        "data": {"daemon-config.json": json.dumps(daemon_config, indent=2)},
    }
    mounts = [
        {"name": "cni", "mountPath": "/host/etc/cni/net.d"},
        # Same path as on the host: the daemon hands it to delegates run chrooted in /hostroot.
        {"name": "cnibin", "mountPath": dirs.bin_dir},
        {"name": "host-run", "mountPath": "/host/run"},
        {"name": "host-var-lib-cni-multus", "mountPath": "/var/lib/cni/multus"},
        {"name": "host-var-lib-kubelet", "mountPath": "/var/lib/kubelet",
         "mountPropagation": "HostToContainer"},
        {"name": "host-run-k8s-cni-cncf-io", "mountPath": "/run/k8s.cni.cncf.io"},
        {"name": "host-run-netns", "mountPath": "/run/netns",
         "mountPropagation": "HostToContainer"},
        {"name": "multus-daemon-config", "mountPath": "/etc/cni/net.d/multus.d",
         "readOnly": True},
        {"name": "hostroot", "mountPath": "/hostroot", "mountPropagation": "HostToContainer"},
        {"name": "multus-conf-dir", "mountPath": "/etc/cni/multus/net.d"},
    ]
    data_dir = k3s_data_dir(dirs.bin_dir)
    if data_dir:
        # K3s from October 2024 on fills data/cni with absolute symlinks into
        # data/<hash>/bin: the daemon looks a delegate up in its own mounts before it runs
        # it chrooted, so those targets must be there too ("failed to find plugin flannel").
        mounts.append({"name": "k3s-data", "mountPath": data_dir, "readOnly": True,
                       "mountPropagation": "HostToContainer"})
    container = {
        "name": "kube-multus", "image": image,
        "command": ["/usr/src/multus-cni/bin/multus-daemon"],
        "resources": _RESOURCES, "securityContext": _PRIVILEGED,
        "terminationMessagePolicy": "FallbackToLogsOnError", "volumeMounts": mounts,
        "env": [{"name": "MULTUS_NODE_NAME",
                 "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
    }
    init = _install_init(image, ["/usr/src/multus-cni/bin/install_multus",
                                 "-d", "/host/opt/cni/bin", "-t", "thick"])
    volumes = [
        _host_path("cni", dirs.conf_dir),
        _host_path("cnibin", dirs.bin_dir),
        _host_path("hostroot", "/"),
        {"name": "multus-daemon-config",
         "configMap": {"name": "multus-daemon-config",
                       "items": [{"key": "daemon-config.json", "path": "daemon-config.json"}]}},
        _host_path("host-run", "/run"),
        _host_path("host-var-lib-cni-multus", "/var/lib/cni/multus"),
        _host_path("host-var-lib-kubelet", "/var/lib/kubelet"),
        _host_path("host-run-k8s-cni-cncf-io", "/run/k8s.cni.cncf.io"),
        _host_path("host-run-netns", "/run/netns/"),
        _host_path("multus-conf-dir", "/etc/cni/multus/net.d"),
    ]
    if data_dir:
        volumes.append(_host_path("k3s-data", data_dir))
    return [config_map, _daemonset(_pod_base([container], [init], volumes, host_pid=True))]


K3S_DATA = "/var/lib/rancher/k3s/data"


def k3s_data_dir(bin_dir: str) -> str | None:
    """K3s's data dir when the CNI bin dir is its data/cni (symlinks into data/<hash>/bin)."""
    return K3S_DATA if bin_dir.rstrip("/") == f"{K3S_DATA}/cni" else None


def thin_daemonset(settings: MultusSettings, dirs: CniDirs) -> list[Manifest]:
    image = settings.image_ref
    container = {
        "name": "kube-multus", "image": image, "command": ["/thin_entrypoint"],
        "args": ["--multus-conf-file=auto",
                 "--multus-autoconfig-dir=/host/etc/cni/net.d",
                 "--cni-conf-dir=/host/etc/cni/net.d",
                 # Paths written into 00-multus.conf are read on the host, not in the pod.
                 f"--multus-kubeconfig-file-host={kubeconfig_path(dirs)}",
                 f"--additional-bin-dir={dirs.bin_dir}"],
        "resources": _RESOURCES, "securityContext": _PRIVILEGED,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "cni", "mountPath": "/host/etc/cni/net.d"},
                         {"name": "cnibin", "mountPath": "/host/opt/cni/bin"}],
    }
    init = _install_init(image, ["/install_multus", "--type", "thin"])
    volumes = [_host_path("cni", dirs.conf_dir), _host_path("cnibin", dirs.bin_dir)]
    return [_daemonset(_pod_base([container], [init], volumes, host_pid=False))]


def cluster_manifests(settings: MultusSettings, dirs: CniDirs) -> list[Manifest]:
    """Everything `kubectl apply` gets for this mode, CRD first."""
    docs = [crd(), *rbac()]
    if settings.mode == "host":
        return [*docs, token_secret()]
    daemonset = thick_daemonset if settings.flavor == "thick" else thin_daemonset
    return docs + daemonset(settings, dirs)


# --- host mode: what the thin entrypoint would write on each node ---------------------------

def kubeconfig_path(dirs: CniDirs) -> str:
    return f"{dirs.conf_dir}/multus.d/multus.kubeconfig"


def pick_master_config(filenames: list[str]) -> str | None:
    """The cluster network's config, chosen as libcni does: first by name, skipping Multus's."""
    candidates = sorted(f for f in filenames
                        if f.endswith((".conf", ".conflist", ".json"))
                        and not f.startswith(MULTUS_CONF))
    return candidates[0] if candidates else None


def host_config(master: dict[str, Any], dirs: CniDirs) -> dict[str, Any]:
    """00-multus.conf delegating to the cluster network, as the thin entrypoint builds it."""
    if not isinstance(master.get("cniVersion"), str):
        raise ValueError("the cluster network config has no cniVersion")
    capabilities: dict[str, bool] = {}
    plugins = master.get("plugins")
    for plugin in plugins if isinstance(plugins, list) else [master]:
        capabilities.update(plugin.get("capabilities") or {})
    conf: dict[str, Any] = {"cniVersion": master["cniVersion"], "name": "multus-cni-network",
                            "type": "multus"}
    if capabilities:
        conf["capabilities"] = capabilities
    conf.update({"binDir": dirs.bin_dir, "kubeconfig": kubeconfig_path(dirs),
                 "delegates": [master]})
    return conf


def host_kubeconfig(server: str, ca_crt_b64: str, token: str) -> str:
    """multus.kubeconfig as the thin entrypoint writes it, with the service account's token."""
    if not token or not ca_crt_b64:
        raise ValueError("the service account token secret has no token or ca.crt yet")
    base64.b64decode(ca_crt_b64, validate=True)  # fail here, not inside Multus on pod start
    return "\n".join([
        "# Kubeconfig file for Multus CNI plugin (written by cnilab).",
        "apiVersion: v1",
        "kind: Config",
        "clusters:",
        "- name: local",
        "  cluster:",
        f"    server: {server}",
        f"    certificate-authority-data: {ca_crt_b64}",
        "users:",
        "- name: multus",
        "  user:",
        f"    token: {json.dumps(token)}",
        "contexts:",
        "- name: multus-context",
        "  context:",
        "    cluster: local",
        "    user: multus",
        "current-context: multus-context",
        "",
    ])


# --- reading the daemonset's state back -------------------------------------------------------

def daemonset_unready(ds: dict[str, Any]) -> str | None:
    """None once every scheduled Multus pod of the current generation is ready, else what is
    missing (from `kubectl get daemonset -o json`)."""
    status = ds.get("status") or {}
    desired = int(status.get("desiredNumberScheduled") or 0)
    ready = int(status.get("numberReady") or 0)
    updated = int(status.get("updatedNumberScheduled") or 0)
    generation = int((ds.get("metadata") or {}).get("generation") or 0)
    if int(status.get("observedGeneration") or 0) < generation:
        return "the daemonset controller has not seen the new spec yet"
    if desired == 0:
        return "no Multus pod scheduled yet"
    if ready < desired or updated < desired:
        return f"{ready} of {desired} Multus pods ready ({updated} updated)"
    return None


def pod_states(pods: dict[str, Any]) -> list[str]:
    """One line per Multus pod: its node, phase and why a container waits or failed (from
    `kubectl get pods -o json`), the lines an unready daemonset is reported with."""
    lines = []
    for pod in pods.get("items") or []:
        status = pod.get("status") or {}
        node = (pod.get("spec") or {}).get("nodeName") or "(not scheduled)"
        why = []
        for c in [*(status.get("initContainerStatuses") or []),
                  *(status.get("containerStatuses") or [])]:
            state = c.get("state") or {}
            stuck = state.get("waiting") or state.get("terminated")
            if stuck and stuck.get("reason") not in (None, "Completed"):
                message = " ".join(str(stuck.get("message") or "").split())[:200]
                why.append(f"{c.get('name')}: {stuck.get('reason')}"
                           + (f" ({message})" if message else ""))
        lines.append(f"{node}: {status.get('phase', '?')}" + ("; " + "; ".join(why) if why else ""))
    return lines
