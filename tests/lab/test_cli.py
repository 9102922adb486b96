"""The `lab` command through main(argv): exit codes, output, and no tracebacks on user errors."""
from __future__ import annotations

import json
import secrets
import tarfile
import textwrap
from pathlib import Path

import pytest

from lab.cli import main
from lab.nodes.providers.netns import lab_namespaces

# A plugin stand-in that answers VERSION (lab up asks it) and nothing else.
STAND_IN = ('#!/bin/sh\necho \'{"cniVersion": "1.1.0", "supportedVersions": '
            '["0.4.0", "1.0.0", "1.1.0"]}\'\n')


def stand_in(tmp_path: Path) -> str:
    plugin = tmp_path / "stand-in-plugin"
    plugin.write_text(STAND_IN)
    plugin.chmod(0o755)
    return str(plugin)


def write_config(tmp_path: Path, name: str, plugin: str | None = None) -> Path:
    plugin = plugin or stand_in(tmp_path)
    path = tmp_path / "lab.toml"
    path.write_text(textwrap.dedent(f"""
        [lab]
        name = "{name}"
        state_dir = "{tmp_path / 'state'}"
        [[nodes]]
        name = "node1"
        role = "server"
        [[nodes]]
        name = "node2"
        [plugin]
        path = "{plugin}"
        type = "cnilab"
    """))
    return path


@pytest.fixture
def lab_toml(tmp_path):
    name = "t3" + secrets.token_hex(3)
    path = write_config(tmp_path, name)
    try:
        yield path, name
    finally:
        main(["-c", str(path), "down"])
        assert lab_namespaces(name) == []


def test_help_lists_core_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("up", "down", "status", "exec", "logs"):
        assert command in out


def test_usage_error_is_rc_2(capsys):
    assert main(["frobnicate"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_missing_config_says_where_and_how(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["status"]) == 1
    err = capsys.readouterr().err
    assert f"no lab config at {tmp_path / 'lab.toml'}" in err
    assert "cp examples/netns-hostgw.toml lab.toml" in err
    assert "Traceback" not in err


def test_config_error_is_one_clear_message(tmp_path, capsys):
    path = tmp_path / "lab.toml"
    path.write_text('[lab]\nname = "x"\nprovder = "netns"\n[[nodes]]\nname = "a"\n'
                    '[plugin]\npath = "/bin/true"\n')
    assert main(["-c", str(path), "status"]) == 1
    err = capsys.readouterr().err
    assert "lab.provder: unknown key; did you mean 'provider'?" in err
    assert "Traceback" not in err


def test_exec_without_command(lab_toml, capsys):
    path, _ = lab_toml
    assert main(["-c", str(path), "exec", "node1"]) == 1
    assert "no command given" in capsys.readouterr().err


@pytest.mark.root
def test_up_status_exec_logs_down(lab_toml, tmp_path, capsys):
    path, name = lab_toml
    # options after the subcommand work too (the README's `lab up -c …`)
    assert main(["up", "-c", str(path)]) == 0
    err = capsys.readouterr().err
    assert "• provision 2 netns nodes" in err and "✓ install the plugin under test" in err
    assert f"lab {name} is up: node1 10.99.0.11, node2 10.99.0.12" in err

    assert main(["-c", str(path), "up"]) == 0          # twice is fine
    capsys.readouterr()

    assert main(["-c", str(path), "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["lab"] == name and status["provider"] == "netns"
    assert [(n["name"], n["address"], n["state"]) for n in status["nodes"]] == [
        ("node1", "10.99.0.11", "running"), ("node2", "10.99.0.12", "running")]

    assert main(["-c", str(path), "status"]) == 0
    assert "node2\t10.99.0.12\trunning\tagent" in capsys.readouterr().out

    assert main(["-c", str(path), "exec", "node1", "--", "ping", "-c1", "-W2",
                 "10.99.0.12"]) == 0
    assert "1 received" in capsys.readouterr().out
    assert main(["-c", str(path), "exec", "node1", "--", "sh", "-c", "exit 7"]) == 7
    assert main(["-c", str(path), "exec", "node9", "--", "true"]) == 1
    assert "no node 'node9'" in capsys.readouterr().err

    out_path = tmp_path / "logs.tar.gz"
    assert main(["-c", str(path), "logs", "-o", str(out_path)]) == 0
    assert capsys.readouterr().out.strip() == str(out_path)
    with tarfile.open(out_path) as tar:
        names = tar.getnames()
        root = f"cnilab-{name}-logs/node2"
        for part in ("ip-neigh.txt", "sysctl.txt", "nft-ruleset.txt", "iptables-save.txt",
                     "network-config.json"):
            assert f"{root}/{part}" in names, part
        sysctls = tar.extractfile(f"{root}/sysctl.txt").read().decode()   # type: ignore[union-attr]
        assert "net.ipv4.ip_forward = " in sysctls
        got = json.loads(tar.extractfile(f"{root}/network-config.json").read())  # type: ignore[union-attr]
        assert got["type"] == "cnilab" and got["nodes"][1]["ip"] == "10.99.0.12"
    # by default under lab-logs/<lab>/, never the working directory's top
    import os

    here = os.getcwd()
    try:
        os.chdir(tmp_path)
        assert main(["-c", str(path), "logs"]) == 0
    finally:
        os.chdir(here)
    default = Path(capsys.readouterr().out.strip())
    assert default.parent == Path("lab-logs") / name and (tmp_path / default).is_file()

    assert main(["-c", str(path), "down"]) == 0
    assert lab_namespaces(name) == []
    capsys.readouterr()
    assert main(["-c", str(path), "status", "--json"]) == 1     # nodes missing: not "ok"
    assert {n["state"] for n in json.loads(capsys.readouterr().out)["nodes"]} == {"missing"}
    assert main(["-c", str(path), "logs", "-o", str(tmp_path / "none.tar.gz")]) == 1
    assert "has no nodes: no logs to collect" in capsys.readouterr().err
    assert not (tmp_path / "none.tar.gz").exists()


@pytest.mark.root
def test_name_override_makes_a_second_lab(lab_toml, capsys):
    path, name = lab_toml
    other = name + "_2"
    try:
        assert main(["-c", str(path), "--name", other, "up"]) == 0
        assert len(lab_namespaces(other)) == 3 and lab_namespaces(name) == []
    finally:
        assert main(["-c", str(path), "--name", other, "down"]) == 0
    assert lab_namespaces(other) == []


@pytest.mark.root
def test_a_missing_plugin_is_reported_before_anything_is_made(tmp_path, capsys):
    name = "t3" + secrets.token_hex(3)
    path = write_config(tmp_path, name, plugin=str(tmp_path / "nope"))
    assert main(["-c", str(path), "up"]) == 1
    err = capsys.readouterr().err
    assert "• provision" not in err           # found out before anything was made
    assert "plugin.path: no plugin executable at" in err and "python -m plugin.build" in err
    assert "Traceback" not in err
    assert lab_namespaces(name) == []


@pytest.mark.root
def test_deploy_puts_a_changed_plugin_on_every_netns_node(tmp_path, capsys):
    """`lab deploy` is the inner loop on every kind of lab, not only on K3s."""
    plugin = tmp_path / "myplugin"
    answer = STAND_IN.split("\n")[1]
    plugin.write_text(f'#!/bin/sh\n[ "$CNI_COMMAND" = VERSION ] && {answer} && exit 0\necho one\n')
    plugin.chmod(0o755)
    name = "t3" + secrets.token_hex(3)
    path = write_config(tmp_path, name, plugin=str(plugin))
    try:
        assert main(["-c", str(path), "up"]) == 0
        plugin.write_text(plugin.read_text().replace("echo one", "echo two"))
        capsys.readouterr()
        assert main(["-c", str(path), "deploy"]) == 0
        assert "myplugin -> 2 nodes as cnilab" in capsys.readouterr().err
        from lab.cluster.session import open_lab

        with open_lab(path) as lab:
            for node in lab.nodes():
                ran = node.run([f"{node.state_dir}/bin/cnilab"])
                assert ran.stdout == "two\n", (node.name, ran)
    finally:
        main(["-c", str(path), "down"])
    assert lab_namespaces(name) == []


@pytest.mark.root
def test_exec_passes_piped_stdin_on(lab_toml):
    """`lab exec NODE -- sh -c 'cat > f' < file` as a user types it: binary-safe."""
    import hashlib
    import subprocess
    import sys

    path, _ = lab_toml
    assert main(["-c", str(path), "up"]) == 0
    data = bytes(range(256)) * 64
    lab = Path(sys.executable).parent / "lab"
    done = subprocess.run([str(lab), "-c", str(path), "exec", "node1", "--", "sha256sum"],
                          input=data, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()


@pytest.mark.root
def test_up_refuses_a_cni_version_the_plugin_does_not_serve(tmp_path, capsys):
    """The reference ptp serves up to 1.0.0: with the default 1.1.0 every ADD would fail."""
    name = "t3" + secrets.token_hex(3)
    path = tmp_path / "lab.toml"
    ptp = ('[plugin]\npath = "/usr/lib/cni/ptp"\n[plugin.config.ipam]\ntype = "host-local"\n'
           'subnet = "${NODE_POD_SUBNET}"\n')
    path.write_text(f'[lab]\nname = "{name}"\nstate_dir = "{tmp_path}/st"\n'
                    f'[[nodes]]\nname = "node1"\n{ptp}')
    try:
        assert main(["-c", str(path), "up"]) == 1
        err = capsys.readouterr().err
        assert "ptp does not serve cniVersion 1.1.0" in err
        assert 'set cniVersion = "1.0.0"' in err
        assert lab_namespaces(name) == []          # the failed lab was cleaned up
        path.write_text(path.read_text().replace("[plugin.config.ipam]",
                                                 '[plugin.config]\ncniVersion = "1.0.0"\n'
                                                 "[plugin.config.ipam]"))
        assert main(["-c", str(path), "up"]) == 0
        assert "ptp serves cniVersion 1.0.0" in capsys.readouterr().err
    finally:
        main(["-c", str(path), "down"])


def test_version(capsys):
    from importlib.metadata import version

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"lab (cnilab) {version('cnilab')}"


@pytest.mark.root
def test_ls_lists_this_hosts_labs_from_their_resources(lab_toml, capsys):
    path, name = lab_toml
    assert main(["-c", str(path), "up"]) == 0
    capsys.readouterr()
    assert main(["ls", "--json"]) == 0
    rows = {row["lab"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows[name]["provider"] == "netns"
    assert rows[name]["nodes"] == ["node1", "node2"]     # not the switch, not pods
    assert rows[name]["config"] == str(path) and rows[name]["pods"] == 0
    assert rows[name]["state"] == "up" and 0 <= rows[name]["age_s"] < 600
    assert main(["ls"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:5] == ["LAB", "PROVIDER", "STATE", "AGE", "PODS"]
    assert any(line.split()[:3] == [name, "netns", "up"] and line.endswith(str(path))
               for line in out)
    assert main(["-c", str(path), "down"]) == 0
    capsys.readouterr()
    assert main(["ls", "--json"]) == 0
    assert name not in {row["lab"] for row in json.loads(capsys.readouterr().out)}


def test_global_options_after_nested_actions_and_before_the_command(tmp_path, capsys):
    """`lab image list -c X` and `lab exec NODE -c CFG -- cmd`: -c belongs to lab."""
    from lab.cli import build_parser, split_command

    own, command = split_command(["exec", "node1", "-c", "x.toml", "--", "ip", "-c", "addr"])
    args = build_parser().parse_args(own)
    assert (str(args.config), args.node, command) == ("x.toml", "node1", ["ip", "-c", "addr"])
    args = build_parser().parse_args(["image", "list", "-c", "y.toml", "--name", "n"])
    assert (str(args.config), args.name, args.image_command) == ("y.toml", "n", "list")
    # without --, the node's command is everything after NODE, as before
    assert build_parser().parse_args(["exec", "node1", "ip", "addr"]).argv == ["ip", "addr"]
    assert main(["status", "--", "ip"]) == 2
    assert "unexpected arguments after --" in capsys.readouterr().err
    assert main(["exec", "node1", "ip", "-br", "addr"]) == 2
    assert "goes after --: lab exec NODE -- ip -br addr" in capsys.readouterr().err


@pytest.mark.root
def test_exec_with_the_config_after_the_node(lab_toml, capsys):
    path, _ = lab_toml
    assert main(["up", "-c", str(path)]) == 0
    capsys.readouterr()
    assert main(["exec", "node2", "-c", str(path), "--", "sh", "-c", "echo -c works"]) == 0
    assert capsys.readouterr().out == "-c works\n"


@pytest.mark.root
def test_a_lab_name_taken_by_another_config_is_refused(lab_toml, tmp_path, capsys):
    """Before: a second address on eth0 and a second plugin beside the first."""
    path, name = lab_toml
    assert main(["-c", str(path), "up"]) == 0
    other = tmp_path / "other.toml"
    other.write_text(path.read_text() + '\n[network]\nunderlay = "10.77.0.0/24"\n')
    capsys.readouterr()
    assert main(["-c", str(other), "up"]) == 1
    err = capsys.readouterr().err
    assert f"lab {name} is already up from another config ({path})" in err
    assert "underlay: up '10.99.0.0/24', this config '10.77.0.0/24'" in err
    assert "• provision" not in err                    # nothing was touched
    from lab.cluster.session import open_lab

    with open_lab(path) as lab:
        addrs = lab.node("node1").run(["ip", "-o", "-4", "addr", "show", "dev", "eth0"]).stdout
    assert addrs.count(" inet ") == 1 and "10.99.0.11/" in addrs
    assert main(["-c", str(path), "up"]) == 0               # its own config still converges
    # not only the underlay: any setting of the network the nodes get (the datapath here)
    vxlan = tmp_path / "vxlan.toml"
    vxlan.write_text(path.read_text() + 'backend = "vxlan"\n')
    capsys.readouterr()
    assert main(["-c", str(vxlan), "up"]) == 1
    err = capsys.readouterr().err
    assert "plugin_config.backend: up 'host-gw', this config 'vxlan'" in err
    assert f"`lab down --name {name} -c {path}` first, or bring this one up under" in err
    # and the scenarios refuse it at session start, whatever they would have found
    (tmp_path / "test_any.py").write_text("def test_any(cluster):\n    assert cluster\n")
    import subprocess
    import sys

    ran = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          str(tmp_path / "test_any.py"), "--lab-config", str(vxlan)],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert ran.returncode != 0, ran.stdout
    assert f"lab {name} is already up from another config" in ran.stdout + ran.stderr
    assert "1 passed" not in ran.stdout


def test_shell_completion_code_and_answers(tmp_path):
    import os
    import subprocess
    import sys

    lab = Path(sys.executable).parent / "lab"
    code = subprocess.run([str(lab), "completion", "bash"], capture_output=True, text=True,
                          timeout=30, check=True).stdout
    assert "complete" in code and "lab" in code
    out = tmp_path / "completions"
    env = {**os.environ, "_ARGCOMPLETE": "1", "COMP_LINE": "lab image p", "COMP_POINT": "11",
           "_ARGCOMPLETE_STDOUT_FILENAME": str(out)}
    subprocess.run([str(lab)], env=env, capture_output=True, timeout=30, check=False)
    assert sorted(out.read_text().split()) == ["path", "pod"]


def test_a_missing_program_is_said_in_labs_words_not_the_wrappers():
    from lab.cli.pod import not_found

    for rc, said in ((127, "nsenter: failed to execute nosuchcmd: No such file or directory\n"),
                     (1, 'exec of "nosuchcmd" failed: No such file or directory\n'),
                     (127, "sh: 1: nosuchcmd: not found\n"),
                     (127, "bash: nosuchcmd: command not found\n")):
        assert not_found(said, rc, "nosuchcmd", "node1") == (
            "✗ command not found: nosuchcmd on node1\n", 127)
    # the program's own complaint about a missing file stays as it is
    own = "cat: nosuchcmd: No such file or directory\n"
    assert not_found(own, 1, "cat", "node1") == (own, 1)


def test_down_of_a_lab_that_never_existed_names_the_labs_that_do(tmp_path, capsys):
    path = write_config(tmp_path, "t3" + secrets.token_hex(3))
    assert main(["-c", str(path), "--name", "nuneverup", "down"]) == 1
    err = capsys.readouterr().err
    assert "no lab nuneverup on this host: nothing to remove" in err
    assert "labs here: " in err and "Traceback" not in err


@pytest.mark.root
def test_a_failed_up_is_listed_as_such_until_down_removes_its_logs(tmp_path, capsys):
    """The harness dir of a failed `lab up` keeps its logs: `lab ls` says so, `lab down` of it
    removes them (before: listed forever, as harness state)."""
    name = "t3" + secrets.token_hex(3)
    broken = tmp_path / "broken"
    broken.write_text("#!/bin/sh\necho not-json\n")
    broken.chmod(0o755)
    path = tmp_path / "lab.toml"
    path.write_text(f'[lab]\nname = "{name}"\n[[nodes]]\nname = "node1"\n'
                    f'[plugin]\npath = "{broken}"\n')
    harness = Path(f"~/.local/state/cnilab/{name}").expanduser()
    try:
        assert main(["-c", str(path), "up"]) == 1
        capsys.readouterr()
        assert main(["ls", "--json"]) == 0
        row = {r["lab"]: r for r in json.loads(capsys.readouterr().out)}[name]
        assert row["state"] == "up failed" and "up-failed-" in row["logs"]
        assert main(["-c", str(path), "down"]) == 0
        assert "remove the logs of lab" in capsys.readouterr().err
        assert not harness.exists()
        assert main(["ls", "--json"]) == 0
        assert name not in {r["lab"] for r in json.loads(capsys.readouterr().out)}
    finally:
        import shutil

        shutil.rmtree(harness, ignore_errors=True)
        main(["-c", str(path), "down"])


@pytest.mark.root
def test_an_interrupted_up_kept_by_retain_is_not_running(lab_toml, capsys, monkeypatch):
    from lab.cluster import actions

    path, name = lab_toml

    def interrupt(self, ctx):
        raise KeyboardInterrupt

    monkeypatch.setattr(actions.CheckPluginVersion, "run", interrupt)
    assert main(["-c", str(path), "up", "--retain"]) == 130
    assert len(lab_namespaces(name)) == 3                  # kept
    capsys.readouterr()
    assert main(["-c", str(path), "status", "--json"]) == 1
    captured = capsys.readouterr()
    status = json.loads(captured.out)
    assert status["up"] == "interrupted"
    assert {n["state"] for n in status["nodes"]} == {"incomplete"}
    assert "`lab up` did not finish (interrupted; kept by --retain)" in captured.err
    monkeypatch.undo()
    assert main(["-c", str(path), "up"]) == 0              # finishing it
    capsys.readouterr()
    assert main(["-c", str(path), "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["up"] == "up"


@pytest.mark.root
def test_node_setup_is_a_step_of_up(tmp_path, capsys):
    name = "t3" + secrets.token_hex(3)
    path = write_config(tmp_path, name)
    setup = tmp_path / "setup.sh"
    setup.write_text('#!/bin/sh\necho "$NODE_NAME" > "$CNI_BIN_DIR/setup-ran"\n')
    setup.chmod(0o755)
    path.write_text(path.read_text() + f'node_setup = "{setup}"\n')
    try:
        assert main(["-c", str(path), "up"]) == 0
        err = capsys.readouterr().err
        assert "• run plugin.node_setup setup.sh on every node" in err
        assert "setup.sh ran on node1, node2" in err
    finally:
        main(["-c", str(path), "down"])


@pytest.mark.root
def test_down_all_removes_each_listed_lab_from_its_config(tmp_path, capsys, monkeypatch):
    """Against this test's own lab only: other people's labs live on this host."""
    import lab.cli.ls as ls

    name = "t3" + secrets.token_hex(3)
    path = write_config(tmp_path, name)
    assert main(["-c", str(path), "up"]) == 0
    mine = [row for row in ls.all_labs("qemu:///system") if row["lab"] == name]
    assert mine and mine[0]["config"] == str(path)
    orphan = {"lab": "noconfig", "provider": "netns", "nodes": [], "config": None}
    monkeypatch.setattr(ls, "all_labs", lambda uri: [*mine, orphan])
    capsys.readouterr()
    assert main(["down", "--all"]) == 1                 # one could not be removed: said so
    err = capsys.readouterr().err
    assert f"✓ remove lab {name}" in err
    assert "not removed: noconfig: no config recorded" in err
    assert lab_namespaces(name) == []


def test_scenarios_without_a_lab_config_say_lab_config_in_one_line(tmp_path):
    import subprocess
    import sys

    (tmp_path / "test_any.py").write_text("def test_any(cluster):\n    assert cluster\n")
    ran = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "test_any.py"], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert ran.returncode == 4, ran.stdout       # pytest's usage error: nothing ran
    said = [line for line in ran.stderr.splitlines() if line.strip()]
    assert said == [f"ERROR: no lab config at {tmp_path / 'lab.toml'}: pass one with "
                    f"--lab-config PATH (examples: {Path(__file__).resolve().parents[2]}"
                    "/examples/netns-hostgw.toml and the others there)"]


def test_every_positional_argument_says_what_it_is():
    """`lab pod add --help` tells NODE from NAME; before, positionals had no help at all."""
    import argparse

    from lab.cli import build_parser

    def walk(parser: argparse.ArgumentParser, path: str) -> list[str]:
        silent = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    silent += walk(sub, f"{path} {name}")
            elif not action.option_strings and not action.help:
                silent.append(f"{path} {action.metavar or action.dest}")
        return silent

    assert walk(build_parser(), "lab") == []


def test_identity_differences_name_each_setting_and_skip_what_was_not_recorded():
    from lab.cluster.actions import identity_differences

    ours = {"underlay": "10.99.0.0/24", "plugin_config": {"backend": "vxlan", "mtu": 1500},
            "source": "/b.toml"}
    theirs = {"underlay": "10.99.0.0/24", "plugin_config": {"backend": "host-gw", "mtu": 1500},
              "source": "/a.toml"}
    assert identity_differences(theirs, ours) == [
        "plugin_config.backend: up 'host-gw', this config 'vxlan'"]
    # a lab recorded before plugin configs were: converges rather than refusing
    assert identity_differences({"underlay": "10.99.0.0/24"}, ours) == []


def test_node_and_pod_names_complete_from_the_lab(tmp_path):
    """argcomplete asks the positional arguments' completers: node names come from the
    config, pods from the lab; a missing config completes nothing and never raises."""
    import argparse

    from lab.cli._common import complete_nodes, complete_pods
    from lab.cli.exec import add_parser as exec_parser

    config = tmp_path / "lab.toml"
    config.write_text('[lab]\nname = "cmpl"\n[[nodes]]\nname = "node1"\n[[nodes]]\n'
                      'name = "node2"\n[[nodes]]\nname = "web"\n[plugin]\npath = "/bin/true"\n')
    args = argparse.Namespace(config=config, name=None)
    assert complete_nodes("node", args) == ["node1", "node2"]
    assert complete_nodes("", args) == ["node1", "node2", "web"]
    missing = argparse.Namespace(config=tmp_path / "none.toml", name=None)
    assert complete_nodes("", missing) == [] and complete_pods("", missing) == []
    subparsers = argparse.ArgumentParser().add_subparsers()
    node_arg = next(a for a in exec_parser(subparsers)._actions if a.dest == "node")
    assert node_arg.completer is complete_nodes          # type: ignore[attr-defined]
