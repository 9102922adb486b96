"""The `lab` command through main(argv): exit codes, output, and no tracebacks on user errors."""
from __future__ import annotations

import json
import secrets
import tarfile
import textwrap
from pathlib import Path

import pytest

from lab.cli import main
from lab.providers.netns import lab_namespaces


def write_config(tmp_path: Path, name: str, plugin: str = "/bin/true") -> Path:
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
        assert f"cnilab-{name}-logs/node2/ip-neigh.txt" in tar.getnames()

    assert main(["-c", str(path), "down"]) == 0
    assert lab_namespaces(name) == []
    assert main(["-c", str(path), "status", "--json"]) == 0
    assert {n["state"] for n in json.loads(capsys.readouterr().out)["nodes"]} == {"missing"}


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
def test_failed_up_reports_and_cleans_up(tmp_path, capsys):
    name = "t3" + secrets.token_hex(3)
    path = write_config(tmp_path, name, plugin=str(tmp_path / "nope"))
    assert main(["-c", str(path), "up"]) == 1
    err = capsys.readouterr().err
    assert "✗ install the plugin under test" in err
    assert "plugin.path: no plugin executable at" in err and "python -m plugin.build" in err
    assert "Traceback" not in err
    assert lab_namespaces(name) == []
