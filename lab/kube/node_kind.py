"""What kind of machine a K3s node is, asked of the node itself, and what K3s needs there when
it is not a VM with systemd (a container node: lab.nodes.providers.podman).

    probe()             one shell line printing the facts (systemd, cgroup v1, whether this
                        root may lower an oom_score_adj, whether nf_conntrack_max is writable)
    extra_args()        the K3s flags those facts call for
    supervisor_script() K3s without systemd: a restart loop with a log and a restart count,
                        run as a background process of the node (what k3d runs as the
                        container's process), started and replaced by install_supervised()
    containerd_oom_*    containerd's restrict_oom_score_adj, only where root cannot write a
                        negative oom_score_adj (no CAP_SYS_RESOURCE): runc would fail every
                        pod sandbox ("getting the final child's pid from pipe caused: EOF")
    pin_rendered_config the same for K3s before v1.32, whose template has no "base" to extend:
                        the config K3s rendered on the node becomes its template, plus the key

Everything here is a pure function, unit-tested as strings.
"""
from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

K3S_BIN = "/usr/local/bin/k3s"
SERVICE = {"server": "k3s", "agent": "k3s-agent"}
SUPERVISOR_DIR = "/usr/local/lib/cnilab"
# K3s's containerd reads config-v3.toml.tmpl from here (containerd 2.x, K3s >= v1.32); the
# template is K3s's own ("base") plus an import of one more file, so no stock line is copied.
CONTAINERD_DIR = "/var/lib/rancher/k3s/agent/etc/containerd"
CONTAINERD_TEMPLATE = f"{CONTAINERD_DIR}/config-v3.toml.tmpl"
CONTAINERD_OOM_FILE = f"{CONTAINERD_DIR}/cnilab-oom.toml"
TEMPLATE_BASE_MINOR = 32        # K3s minors whose containerd is 2.x and whose template has "base"
# Before that: containerd 1.x, config.toml rendered from config.toml.tmpl when one exists.
RENDERED_CONFIG = f"{CONTAINERD_DIR}/config.toml"
OLD_TEMPLATE = f"{CONTAINERD_DIR}/config.toml.tmpl"
# The CRI plugin's table in containerd 1.x configs: version 2 names it by its full id, the
# version 1 config of K3s v1.21 (containerd 1.4) by its short name.
_CRI_TABLE = r'^\[plugins\.(cri|"io\.containerd\.grpc\.v1\.cri")\]$'
FAIL_CGROUPV1_MINOR = 31        # kubelet's failCgroupV1 (true by default from v1.35)


@dataclass(frozen=True)
class NodeKind:
    systemd: bool = True            # K3s runs as a unit; else under supervisor_script
    cgroup_v1: bool = False
    oom_restricted: bool = False    # root cannot lower oom_score_adj here
    conntrack_fixed: bool = False   # nf_conntrack_max is read-only in the node's netns


def probe() -> str:
    """sh printing one `key=0|1` line per fact; the oom test writes in a child shell only."""
    return ("echo systemd=$([ -d /run/systemd/system ] && echo 1 || echo 0); "
            "echo cgroup_v1=$([ -f /sys/fs/cgroup/cgroup.controllers ] && echo 0 || echo 1); "
            "if sh -c 'echo -999 > /proc/self/oom_score_adj' 2>/dev/null; then "
            "echo oom_restricted=0; else echo oom_restricted=1; fi; "
            "f=/proc/sys/net/netfilter/nf_conntrack_max; "
            "echo conntrack_fixed=$([ -e $f ] && [ ! -w $f ] && echo 1 || echo 0)")


def parse_probe(output: str) -> NodeKind:
    """The facts from probe()'s output; what is missing keeps a VM's default."""
    seen = {}
    for line in output.splitlines():
        key, _, value = line.strip().partition("=")
        if value in ("0", "1"):
            seen[key] = value == "1"
    return NodeKind(systemd=seen.get("systemd", True), cgroup_v1=seen.get("cgroup_v1", False),
                    oom_restricted=seen.get("oom_restricted", False),
                    conntrack_fixed=seen.get("conntrack_fixed", False))


def extra_args(kind: NodeKind, k3s_minor: int) -> list[str]:
    """Flags K3s needs on this kind of node (both roles)."""
    args = []
    if kind.cgroup_v1 and k3s_minor >= FAIL_CGROUPV1_MINOR:
        # kubelet v1.35 refuses cgroup v1 hosts unless told otherwise
        args.append("--kubelet-arg=fail-cgroupv1=false")
    if kind.conntrack_fixed:
        # kube-proxy would set nf_conntrack_max, global and read-only from a node's netns
        # (kind sets conntrack.maxPerCore = 0 for the same reason)
        args.append("--kube-proxy-arg=conntrack-max-per-core=0")
    return args


def containerd_oom_import() -> str:
    """The containerd (config version 3) fragment containerd merges over K3s's config."""
    return ("version = 3\n\n[plugins.'io.containerd.cri.v1.runtime']\n"
            "  restrict_oom_score_adj = true\n")


def containerd_oom_template() -> str:
    """config-v3.toml.tmpl: K3s's own template, with an import of the fragment above. The
    import sits among the top-level keys, before the first table of the base template."""
    return f'imports = ["{CONTAINERD_OOM_FILE}"]\n{{{{ template "base" . }}}}\n'


def pin_rendered_config(wait_s: int = 120, conf: str = RENDERED_CONFIG,
                        tmpl: str = OLD_TEMPLATE) -> str:
    """sh that waits (up to wait_s) for the containerd config K3s renders at start, then
    writes it back as config.toml.tmpl with restrict_oom_score_adj in the CRI table. Prints
    `pinned` when it wrote the template (K3s must restart to use it); a template already there
    is kept (re-runs). Exit 3: K3s rendered nothing in time; 4: no CRI table in what it did."""
    conf, tmpl = q(conf), q(tmpl)
    return (f"[ -e {tmpl} ] && exit 0; i=0; "
            f"while [ ! -s {conf} ] && [ $i -lt {wait_s} ]; do sleep 1; i=$((i+1)); done; "
            f"[ -s {conf} ] || exit 3; "
            f"sed -E '/{_CRI_TABLE}/a\\  restrict_oom_score_adj = true' {conf} > {tmpl}.new; "
            f"grep -q '^  restrict_oom_score_adj = true$' {tmpl}.new || {{ rm -f {tmpl}.new; "
            f"exit 4; }}; mv -f {tmpl}.new {tmpl}; echo pinned")


def planned_restart_path(role: str) -> str:
    """A file whose presence tells the supervisor that the next exit of K3s was asked for
    (not counted as a crash)."""
    return f"/run/cnilab-{SERVICE[role]}.planned"


def restart_supervised(role: str) -> str:
    """sh stopping the supervised K3s (its containerd dies with it); the supervisor starts it
    again in 5 s and does not count it as a restart."""
    pid = q(pid_path(role))
    return (f"touch {q(planned_restart_path(role))}; "
            f"pkill -P \"$(cat {pid})\"")


def log_path(role: str) -> str:
    return f"/var/log/{SERVICE[role]}.log"


def restarts_path(role: str) -> str:
    return f"/run/cnilab-{SERVICE[role]}.restarts"


def pid_path(role: str) -> str:
    return f"/run/cnilab-{SERVICE[role]}.pid"


def supervisor_script(args: Sequence[str], lab_name: str) -> str:
    """K3s in a restart loop, as systemd's Restart=always, RestartSec=5s would keep it; every
    exit is counted (crash loops are reported, as NRestarts is on VMs) and logged."""
    role = args[0]
    log, restarts = q(log_path(role)), q(restarts_path(role))
    planned = q(planned_restart_path(role))
    return "\n".join([
        "#!/bin/sh",
        f"# K3s {role} of cnilab lab {lab_name}, supervised without systemd (container node)",
        f"echo 0 > {restarts}",
        "while :; do",
        f"  echo \"$(date -Is) starting K3s {role}\" >> {log}",
        f"  {K3S_BIN} {shlex.join(args)} >> {log} 2>&1",
        "  rc=$?",
        f"  echo \"$(date -Is) K3s {role} exited rc=$rc\" >> {log}",
        f"  if [ -e {planned} ]; then rm -f {planned}; "
        f"else echo $(( $(cat {restarts}) + 1 )) > {restarts}; fi",
        "  sleep 5",
        "done",
        "",
    ])


def install_supervised(role: str) -> str:
    """Writes the supervisor from stdin; (re)starts it only when it changed or is not running
    (idempotent re-runs). The old one and its K3s are stopped first; K3s's containerd shims
    keep the pods running, as KillMode=process does on VMs."""
    script = f"{SUPERVISOR_DIR}/{SERVICE[role]}.sh"
    pid = q(pid_path(role))
    running = f'[ -s {pid} ] && kill -0 "$(cat {pid})" 2>/dev/null'
    return (
        f"set -e; install -d -m 0755 {SUPERVISOR_DIR}; cat > {script}.new; "
        f"if cmp -s {script}.new {script} && {running}; then rm -f {script}.new; exit 0; fi; "
        f"mv -f {script}.new {script}; chmod 0755 {script}; "
        f"if {running}; then old=$(cat {pid}); pkill -P \"$old\" 2>/dev/null || true; "
        f"kill \"$old\" 2>/dev/null || true; fi; "
        f"setsid {script} </dev/null >/dev/null 2>&1 & echo $! > {pid}"
    )


def restart_count(role: str) -> list[str]:
    """argv printing how often the supervisor restarted K3s (systemd's NRestarts, here)."""
    return ["sh", "-c", f"cat {q(restarts_path(role))} 2>/dev/null || echo 0"]


def log_tail(role: str, lines: int = 40) -> list[str]:
    """argv printing the end of the supervisor's K3s log (the journal, here)."""
    return ["tail", "-n", str(lines), log_path(role)]


def q(word: str) -> str:
    return shlex.quote(word)
