"""K3s on nodes without systemd (container nodes): the probe, the flags, the supervisor and
containerd's OOM option, as strings; the probe and the supervisor also run for real in sh."""
from __future__ import annotations

import subprocess

import tomllib

from lab.kube import node_kind as k
from lab.kube.node_kind import NodeKind


def test_the_probe_answers_every_fact_here():
    out = subprocess.run(["sh", "-c", k.probe()], capture_output=True, text=True,
                         check=True).stdout
    keys = [line.split("=")[0] for line in out.splitlines()]
    assert keys == ["systemd", "cgroup_v1", "oom_restricted", "conntrack_fixed"]
    assert all(line.split("=")[1] in ("0", "1") for line in out.splitlines())


def test_parsing_keeps_a_vms_defaults_for_what_is_missing():
    assert k.parse_probe("") == NodeKind()
    assert k.parse_probe("systemd=0\ncgroup_v1=1\noom_restricted=1\nconntrack_fixed=1\n") == \
        NodeKind(systemd=False, cgroup_v1=True, oom_restricted=True, conntrack_fixed=True)


def test_flags_follow_the_node_and_the_k3s_release():
    container = NodeKind(systemd=False, cgroup_v1=True, conntrack_fixed=True)
    assert k.extra_args(container, 35) == ["--kubelet-arg=fail-cgroupv1=false",
                                           "--kube-proxy-arg=conntrack-max-per-core=0"]
    # kubelets before v1.31 have no such flag and would refuse it
    assert k.extra_args(container, 30) == ["--kube-proxy-arg=conntrack-max-per-core=0"]
    assert k.extra_args(NodeKind(), 35) == []


def test_the_oom_option_is_k3s_base_template_plus_one_import():
    template = k.containerd_oom_template()
    assert template.splitlines() == [f'imports = ["{k.CONTAINERD_OOM_FILE}"]',
                                     '{{ template "base" . }}']
    fragment = tomllib.loads(k.containerd_oom_import())
    assert fragment == {"version": 3, "plugins": {"io.containerd.cri.v1.runtime": {
        "restrict_oom_score_adj": True}}}
    assert k.CONTAINERD_TEMPLATE.endswith("/agent/etc/containerd/config-v3.toml.tmpl")


def test_the_supervisor_restarts_k3s_counts_and_logs_each_exit():
    script = k.supervisor_script(["server", "--node-name", "n1", "--disable=traefik"], "lab1")
    lines = script.splitlines()
    assert lines[0] == "#!/bin/sh" and "lab lab1" in lines[1]
    assert "  /usr/local/bin/k3s server --node-name n1 --disable=traefik >> " \
           "/var/log/k3s.log 2>&1" in lines
    assert "echo 0 > /run/cnilab-k3s.restarts" in lines
    assert any("/run/cnilab-k3s.restarts) + 1 )) > /run/cnilab-k3s.restarts" in line
               for line in lines)
    assert "  sleep 5" in lines
    agent = k.supervisor_script(["agent", "--server", "https://x:6443"], "lab1")
    assert "/var/log/k3s-agent.log" in agent and "/run/cnilab-k3s-agent.restarts" in agent


def test_the_supervisor_is_replaced_only_when_it_changed_or_died():
    line = k.install_supervised("agent")
    assert line.startswith("set -e; install -d -m 0755 /usr/local/lib/cnilab; "
                           "cat > /usr/local/lib/cnilab/k3s-agent.sh.new; ")
    assert ("if cmp -s /usr/local/lib/cnilab/k3s-agent.sh.new /usr/local/lib/cnilab/"
            "k3s-agent.sh && [ -s /run/cnilab-k3s-agent.pid ] && kill -0") in line
    assert line.endswith("setsid /usr/local/lib/cnilab/k3s-agent.sh </dev/null >/dev/null "
                         "2>&1 & echo $! > /run/cnilab-k3s-agent.pid")


def test_restarts_and_log_come_from_the_supervisors_files():
    assert k.restart_count("server") == ["sh", "-c", "cat /run/cnilab-k3s.restarts "
                                                     "2>/dev/null || echo 0"]
    assert k.log_tail("agent", 10) == ["tail", "-n", "10", "/var/log/k3s-agent.log"]


# containerd 1.x configs as K3s renders them: v1.28 (config version 2) and v1.21 (version 1)
RENDERED_V2 = '''version = 2

[plugins."io.containerd.internal.v1.opt"]
  path = "/var/lib/rancher/k3s/agent/containerd"
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  enable_selinux = false

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
'''
RENDERED_V1 = '''[plugins.opt]
  path = "/var/lib/rancher/k3s/agent/containerd"

[plugins.cri]
  stream_server_address = "127.0.0.1"
[plugins.cri.containerd]
  snapshotter = "overlayfs"
'''


def pin(tmp_path, rendered: str | None, wait_s: int = 1) -> subprocess.CompletedProcess[str]:
    conf, tmpl = tmp_path / "config.toml", tmp_path / "config.toml.tmpl"
    if rendered is not None:
        conf.write_text(rendered)
    return subprocess.run(["sh", "-c", k.pin_rendered_config(wait_s, str(conf), str(tmpl))],
                          capture_output=True, text=True, check=False)


def test_old_k3s_gets_its_own_rendered_config_back_with_the_oom_key(tmp_path):
    for rendered, table in ((RENDERED_V2, "io.containerd.grpc.v1.cri"), (RENDERED_V1, "cri")):
        (tmp_path / "config.toml.tmpl").unlink(missing_ok=True)
        done = pin(tmp_path, rendered)
        assert (done.returncode, done.stdout.strip()) == (0, "pinned"), done.stderr
        pinned = tomllib.loads((tmp_path / "config.toml.tmpl").read_text())
        original = tomllib.loads(rendered)
        assert pinned["plugins"][table].pop("restrict_oom_score_adj") is True
        assert pinned == original       # nothing else changed
        # a second run keeps the template it made (and asks for no restart)
        again = pin(tmp_path, rendered)
        assert (again.returncode, again.stdout) == (0, "")


def test_pinning_says_when_k3s_rendered_nothing_or_no_cri_table(tmp_path):
    assert pin(tmp_path, None).returncode == 3
    assert pin(tmp_path, "version = 2\n[plugins.other]\n  x = 1\n").returncode == 4
    assert not (tmp_path / "config.toml.tmpl").exists()


def test_a_planned_restart_is_not_counted_as_a_crash():
    script = k.supervisor_script(["agent", "--server", "https://x:6443"], "lab1")
    assert "if [ -e /run/cnilab-k3s-agent.planned ]; then rm -f /run/cnilab-k3s-agent.planned;" \
        in script
    assert k.restart_supervised("agent") == ('touch /run/cnilab-k3s-agent.planned; '
                                             'pkill -P "$(cat /run/cnilab-k3s-agent.pid)"')
