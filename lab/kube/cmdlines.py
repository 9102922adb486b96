"""K3s install / start / join command lines, built as strings by pure functions (k3sup's way).

Every string here is unit-tested as-is. Node-side commands are POSIX sh run as root over
`Node.run(["sh", "-c", ...])`. The join token never appears in a command line, a unit file or an
environment variable: it lives in a 0600 file on each node and K3s reads it with --token-file.
The flags used exist in every K3s release from v1.21 on.
"""
from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

from lab.config.k3s import K3sSettings

K3S_BIN = "/usr/local/bin/k3s"
IMAGES_DIR = "/var/lib/rancher/k3s/agent/images"
CONFIG_DIR = "/etc/rancher/k3s"
NODE_TOKEN_PATH = f"{CONFIG_DIR}/cnilab-token"
NODE_KUBECONFIG = f"{CONFIG_DIR}/k3s.yaml"
INSTALL_SCRIPT_PATH = "/var/lib/rancher/cnilab-install.sh"
API_PORT = 6443
RELEASES = "https://github.com/k3s-io/k3s/releases/download"
SERVICE = {"server": "k3s", "agent": "k3s-agent"}   # the names install.sh gives them too


def q(word: str) -> str:
    return shlex.quote(word)


def binary_name(arch: str) -> str:
    """The release asset for an architecture, as named in sha256sum-<arch>.txt."""
    return "k3s" if arch == "amd64" else f"k3s-{arch}"


def download_url(version: str, arch: str, base: str | None = None) -> str:
    # "+" in the tag must be escaped in the URL path, else some proxies read it as a space.
    return f"{base or RELEASES}/{quote(version, safe='')}/{binary_name(arch)}"


def binary_matches(sha256: str, path: str = K3S_BIN) -> str:
    """Exit 0 when path already holds the binary with this checksum (makes installs idempotent)."""
    return f"echo {q(sha256 + '  ' + path)} | sha256sum -c --status - 2>/dev/null"


def install_binary_connected(version: str, arch: str, sha256: str,
                             base: str | None = None) -> str:
    """Downloads the pinned release binary on the node (from `base` when set: a mirror of the
    release pages), verifies it, then moves it into place."""
    tmp = f"{K3S_BIN}.cnilab-download"
    return (
        f"{binary_matches(sha256)} && exit 0; "
        f"set -e; curl -fsSL --retry 3 -o {tmp} {q(download_url(version, arch, base))}; "
        f"if ! {binary_matches(sha256, tmp)}; then rm -f {tmp}; "
        f"echo {q(f'checksum mismatch for K3s {version} ({arch}): expected {sha256}')} >&2; "
        f"exit 1; fi; chmod 0755 {tmp}; mv -f {tmp} {K3S_BIN}"
    )


REGISTRIES_PATH = f"{CONFIG_DIR}/registries.yaml"


def image_registry(ref: str) -> str:
    """The registry an image reference pulls from ("nicolaka/netshoot:v0.13" -> docker.io)."""
    first, _, rest = ref.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def registries_yaml(mirror: str, image_refs: Sequence[str]) -> str:
    """K3s's registries.yaml sending every registry these images (and K3s's own, on docker.io)
    name to one mirror. JSON is YAML: no YAML writer needed on either side."""
    registries = sorted({"docker.io", *(image_registry(r) for r in image_refs)} - {"localhost"})
    return json.dumps({"mirrors": {r: {"endpoint": [mirror]} for r in registries}},
                      indent=2) + "\n"


def prepare_dirs() -> str:
    return f"install -d -m 0755 {CONFIG_DIR} {IMAGES_DIR}"


def server_url(address: str) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"https://{host}:{API_PORT}"


@dataclass(frozen=True)
class NodeFacts:
    """What the harness knows of one node when it writes that node's K3s command line."""

    name: str
    ip: str
    lab_iface: str | None = None     # the interface holding ip (read on the node)
    pause_image: str | None = None   # the sandbox image, when K3s's own cannot be had
    other_ips: tuple[str, ...] = ()  # dual-stack: the node's address in the other family
    extra_args: tuple[str, ...] = ()  # what this kind of node needs (lab.kube.node_kind)


def _common_args(settings: K3sSettings, node: NodeFacts) -> list[str]:
    # Dual-stack K3s takes every family's node address, comma-separated, v4 first.
    node_ip = ",".join([node.ip, *node.other_ips])
    args = ["--node-name", node.name, "--node-ip", node_ip, "--token-file", NODE_TOKEN_PATH]
    # flannel picks the interface of the default route; a lab network often is not it (an
    # isolated libvirt network has no default route at all), so name the lab interface.
    iface = settings.flannel_iface or node.lab_iface
    if iface and not settings.primary:
        args += ["--flannel-iface", iface]
    if node.pause_image:
        args += ["--pause-image", node.pause_image]
    return args + list(node.extra_args)


# K3s's own service CIDRs; a dual-stack cluster needs one per family.
SERVICE_CIDRS = {4: "10.43.0.0/16", 6: "fd00:43::/112"}


def server_args(settings: K3sSettings, node: NodeFacts,
                cluster_cidrs: Sequence[str] = ()) -> list[str]:
    """`k3s server …`: on the lab address, kubeconfig root-only, flannel off if primary (and
    then the cluster CIDR is the plugin's pod CIDR, so K3s and the plugin agree on it; one per
    family on a dual-stack lab, with a service CIDR per family as K3s requires)."""
    args = ["server", *_common_args(settings, node),
            "--tls-san", node.ip, "--write-kubeconfig-mode", "0600"]
    if settings.primary:
        # K3s's documented recipe for a custom CNI: no flannel, no kube-router policy controller.
        args += ["--flannel-backend=none", "--disable-network-policy"]
        if cluster_cidrs:
            args += ["--cluster-cidr", ",".join(cluster_cidrs)]
        if len(cluster_cidrs) > 1:
            families = [6 if ":" in cidr else 4 for cidr in cluster_cidrs]
            args += ["--service-cidr", ",".join(SERVICE_CIDRS[f] for f in families)]
    return args + list(settings.server_args)


def agent_args(settings: K3sSettings, node: NodeFacts, server_ip: str) -> list[str]:
    """`k3s agent …` joining the server over the lab network."""
    return ["agent", "--server", server_url(server_ip), *_common_args(settings, node),
            *settings.agent_args]


def interface_of(ip: str) -> list[str]:
    """argv listing the interface that holds ip (`ip -o addr show to IP`)."""
    return ["ip", "-o", "-4", "addr", "show", "to", ip]


def parse_interface(output: str) -> str | None:
    """The interface name in `ip -o addr show` output ("2: enp1s0    inet …")."""
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].endswith(":"):
            return parts[1].split("@", 1)[0]
    return None


# Kubernetes assumes a way out: flannel looks for the default route's interface, and a pod
# reaching the API through the kubernetes Service (multus-daemon asking for a pod UID) needs a
# route for 10.43.0.1 before kube-proxy's DNAT ever sees the packet. A node on an isolated lab
# network has none, so it gets one on the lab interface itself: no gateway, so a packet for
# anything outside the lab asks the lab segment who has it and goes nowhere. A high metric
# leaves any real default route in charge.
LAB_DEFAULT_METRIC = 4242


def default_route_on(iface: str, families: Sequence[int]) -> str:
    """A shell line adding `default dev IFACE` per family where the node has no default route
    (idempotent; a node whose lab interface is missing is left alone), printing each added."""
    q = shlex.quote(iface)
    steps = [f"ip -{f} route show default | grep -q . || "
             f"{{ ip -{f} route add default dev {q} metric {LAB_DEFAULT_METRIC} && "
             f"echo IPv{f}; }}" for f in families]
    return f"[ -e /sys/class/net/{q} ] || exit 0; " + "; ".join(steps)


# Where a node may already have the plugins a cluster network needs beside its own: Debian's
# containernetworking-plugins, and the ones K3s unpacks (its flannel setup uses them).
SUPPORT_PLUGIN_SOURCES = ("/usr/lib/cni", "/var/lib/rancher/k3s/data/current/bin")


def link_support_plugins(bin_dir: str, names: Sequence[str]) -> str:
    """sh: makes each plugin the runtime will exec from bin_dir exist there (containerd runs
    `loopback` for every pod; the IPAM plugin is looked up on the same CNI_PATH). With
    flannel off K3s points containerd at /opt/cni/bin, where nothing is installed yet."""
    parts = []
    for name in names:
        target = q(f"{bin_dir}/{name}")
        sources = " ".join(q(f"{d}/{name}") for d in SUPPORT_PLUGIN_SOURCES)
        parts.append(f"if [ ! -e {target} ]; then for s in {sources}; do "
                     f"if [ -x \"$s\" ]; then ln -sf \"$s\" {target}; break; fi; done; fi; "
                     f"[ -e {target} ] || {{ echo {q(f'no {name} CNI plugin for {bin_dir}')} >&2; "
                     "exit 1; }")
    return f"install -d -m 0755 {q(bin_dir)}; " + "; ".join(parts)


def restart_count(role: str) -> list[str]:
    """argv printing how often systemd restarted the unit since it was last started by hand."""
    return ["systemctl", "show", "-p", "NRestarts", "--value", f"{SERVICE[role]}.service"]


def journal_tail(role: str, lines: int = 40) -> list[str]:
    return ["journalctl", "--no-pager", "-o", "cat", "-n", str(lines), "-u",
            f"{SERVICE[role]}.service"]


def systemd_unit(args: Sequence[str], lab_name: str) -> str:
    """A unit like install.sh's (Delegate, KillMode=process so pods survive restarts)."""
    role = args[0]
    return "\n".join([
        "[Unit]",
        f"Description=K3s {role} (cnilab lab {lab_name})",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=exec",
        "ExecStartPre=-/sbin/modprobe br_netfilter",
        "ExecStartPre=-/sbin/modprobe overlay",
        f"ExecStart={K3S_BIN} {shlex.join(args)}",
        "KillMode=process",
        "Delegate=yes",
        "LimitNOFILE=1048576",
        "LimitNPROC=infinity",
        "LimitCORE=infinity",
        "TasksMax=infinity",
        "TimeoutStartSec=0",
        "Restart=always",
        "RestartSec=5s",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ])


def install_unit(role: str) -> str:
    """Writes the unit from stdin; restarts K3s only when the unit changed (idempotent re-runs)."""
    service = SERVICE[role]
    unit = f"/etc/systemd/system/{service}.service"
    return (
        f"set -e; cat > {unit}.new; "
        f"if cmp -s {unit}.new {unit}; then rm -f {unit}.new; action=start; "
        f"else mv -f {unit}.new {unit}; action=restart; fi; "
        f"systemctl daemon-reload; systemctl enable {service}.service; "
        f"systemctl $action {service}.service"
    )


def install_with_script(args: Sequence[str], version: str) -> str:
    """Runs upstream install.sh on the binary already in place: nothing is downloaded."""
    env = {"INSTALL_K3S_SKIP_DOWNLOAD": "true", "INSTALL_K3S_VERSION": version,
           "INSTALL_K3S_EXEC": shlex.join(args)}
    assignments = " ".join(f"{key}={q(value)}" for key, value in env.items())
    return f"{assignments} sh {INSTALL_SCRIPT_PATH}"


def service_active(role: str) -> str:
    return f"systemctl is-active --quiet {SERVICE[role]}.service"


def kubectl(*args: str) -> list[str]:
    """argv for kubectl on the server node (K3s's built-in one, its admin kubeconfig)."""
    return [K3S_BIN, "kubectl", *args]


def unpack_image(ref: str, snapshotter: str) -> str:
    """Unpacks an image already in containerd's content store (an imported tarball is not) into
    the CRI's snapshotter: `ctr images mount` unpacks, `unmount --rm` drops only the mount's own
    snapshot. Exit 3 with ctr's message when the image is not there."""
    ctr = f"{K3S_BIN} ctr -n k8s.io images"
    flags = f"--snapshotter {q(snapshotter)}"
    return (f'd=$(mktemp -d) || exit 1; if {ctr} mount {flags} {q(ref)} "$d" >/dev/null '
            f'2>"$d.err"; then {ctr} unmount {flags} --rm "$d" >/dev/null; rc=$?; '
            'else rc=3; cat "$d.err" >&2; fi; rmdir "$d"; rm -f "$d.err"; exit $rc')


def has_image_tarballs() -> str:
    """Exit 0 when the node holds image tarballs for K3s to import (its air-gap images)."""
    return f'for f in {IMAGES_DIR}/*.tar*; do [ -f "$f" ] && exit 0; done; exit 1'


def nodes_json() -> list[str]:
    return kubectl("get", "nodes", "-o", "json")


def diagnostics() -> dict[str, list[str]]:
    """What `lab logs` can collect from a K3s node (file name -> argv; failures are fine)."""
    return {
        "k3s-journal.txt": ["journalctl", "--no-pager", "-n", "2000", "-u", "k3s",
                            "-u", "k3s-agent"],
        # nodes without systemd (container nodes): the supervisor's log (lab.kube.node_kind)
        "k3s-log.txt": ["sh", "-c", "tail -n 3000 /var/log/k3s.log /var/log/k3s-agent.log "
                                    "2>/dev/null; true"],
        "k3s-containerd-config.toml": ["cat", "/var/lib/rancher/k3s/agent/etc/containerd/"
                                              "config.toml"],
        "k3s-cni-conf.txt": ["sh", "-c", "for f in /var/lib/rancher/k3s/agent/etc/cni/net.d/*;"
                                         " do echo \"== $f\"; cat \"$f\"; echo; done"],
        "k3s-pods.txt": kubectl("get", "pods", "-A", "-o", "wide"),
        "k3s-events.txt": kubectl("get", "events", "-A", "--sort-by=.lastTimestamp"),
    }


def uninstall() -> str:
    """Removes K3s from a node we installed it on (existing nodes: `lab down`)."""
    units = " ".join(f"/etc/systemd/system/{s}.service" for s in SERVICE.values())
    return (
        "if [ -x /usr/local/bin/k3s-uninstall.sh ]; then /usr/local/bin/k3s-uninstall.sh; fi; "
        "if [ -x /usr/local/bin/k3s-agent-uninstall.sh ]; then "
        "/usr/local/bin/k3s-agent-uninstall.sh; fi; "
        f"systemctl disable --now {' '.join(SERVICE.values())} 2>/dev/null; "
        f"rm -f {units}; systemctl daemon-reload; "
        # containerd shims outlive the service (KillMode=process): stop the ones K3s started.
        # Matched by executable, not command line: `pgrep -f` would match this very shell.
        "for p in /proc/[0-9]*; do case \"$(readlink $p/exe 2>/dev/null)\" in "
        "/var/lib/rancher/k3s/data/*) kill -9 ${p#/proc/} 2>/dev/null;; esac; done; "
        "for m in $(awk '$2 ~ \"^/(run/k3s|var/lib/kubelet|var/lib/rancher/k3s)\" {print $2}' "
        "/proc/self/mounts | sort -r); do umount \"$m\" 2>/dev/null; done; "
        "ip link delete cni0 2>/dev/null; ip link delete flannel.1 2>/dev/null; "
        "rm -rf /var/lib/rancher/k3s /etc/rancher/k3s /run/k3s /var/lib/kubelet; "
        f"rm -f {K3S_BIN}; true"
    )
