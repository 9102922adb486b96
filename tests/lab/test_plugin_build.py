"""`[plugin] build`: validated as a config key, run in the config's folder with a deadline
before `lab up` and `lab deploy` look at plugin.path, and one clear error when it fails."""
from __future__ import annotations

import os
import secrets
import textwrap
import time
from pathlib import Path

import pytest
from test_cli import STAND_IN
from test_cli import write_config as write_lab_config

from lab.api import LabError
from lab.cli import main
from lab.cluster.build import build_plugin
from lab.config import load_config
from lab.nodes.providers.netns import lab_namespaces

# The "source" is src.txt; the build stamps it into plug.in (a stand-in plugin answering
# VERSION, printing the source's word for any other command): a node shows which build it has.
PLUG_IN = (f'#!/bin/sh\n[ "$CNI_COMMAND" = VERSION ] && {STAND_IN.splitlines()[1]} && exit 0\n'
           "echo @WORD@\n")
BUILD = ('test -f src.txt && mkdir -p out && sed "s/@WORD@/$(cat src.txt)/" plug.in '
         '> out/plug.tmp && chmod +x out/plug.tmp && mv out/plug.tmp out/plug')


def write_config(folder: Path, build: str | None, *, name: str = "demo",
                 extra: str = "") -> Path:
    """test_cli's two-node lab with plugin.path out/plug (made by the build), plus build."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plug.in").write_text(PLUG_IN)
    path = write_lab_config(folder, name, plugin="out/plug")
    # a TOML multi-line literal string holds the command as written: no escapes
    build_line = f"build = '''{build}'''\n" if build is not None else ""
    path.write_text(path.read_text() + build_line + textwrap.dedent(extra) + "\n")
    return path


def lab_error(call) -> str:
    with pytest.raises(LabError) as info:
        call()
    return info.value.describe()


# -- the config keys -------------------------------------------------------------------------

def test_build_is_optional_and_kept_as_written(tmp_path):
    assert load_config(write_config(tmp_path / "a", None)).plugin.build is None
    config = load_config(write_config(tmp_path / "b", "cd go-plugin && go build -o x ."))
    assert config.plugin.build == "cd go-plugin && go build -o x ."
    assert config.plugin.build_timeout == 900


def test_an_empty_build_is_refused_with_an_example(tmp_path):
    message = lab_error(lambda: load_config(write_config(tmp_path, "   ")))
    assert "plugin.build: is empty" in message and "go build" in message


@pytest.mark.parametrize("timeout", ["0", "-5"])
def test_a_build_timeout_must_be_a_positive_number_of_seconds(tmp_path, timeout):
    path = write_config(tmp_path, "true", extra=f"build_timeout = {timeout}")
    message = lab_error(lambda: load_config(path))
    assert "plugin.build_timeout:" in message and "above 0" in message


def test_a_build_timeout_without_a_build_is_refused(tmp_path):
    path = write_config(tmp_path, None, extra="build_timeout = 60")
    message = lab_error(lambda: load_config(path))
    assert "build_timeout is set but build is not" in message


def test_a_misspelt_build_key_is_named(tmp_path):
    path = write_config(tmp_path, None, extra='biuld = "make"')
    assert "did you mean 'build'" in lab_error(lambda: load_config(path))


# -- the build step --------------------------------------------------------------------------

def test_a_build_runs_in_the_configs_folder_whatever_the_cwd(tmp_path, monkeypatch):
    folder = tmp_path / "repo"
    config = load_config(write_config(folder, BUILD))
    (folder / "src.txt").write_text("one\n")
    monkeypatch.chdir(tmp_path)          # not the config's folder
    seen: list[str] = []
    took = build_plugin(config, seen.append)
    assert took is not None and took >= 0
    assert (folder / "out" / "plug").is_file()
    assert not (tmp_path / "out").exists()
    assert config.plugin_path == folder / "out" / "plug"
    assert seen and seen[0].startswith("built in ")


def test_no_build_set_means_nothing_runs(tmp_path):
    assert build_plugin(load_config(write_config(tmp_path, None))) is None


def test_a_failing_build_is_one_error_with_its_output_and_the_fix(tmp_path):
    command = "echo compiling; echo 'main.go:3:1: syntax error' >&2; exit 3"
    config = load_config(write_config(tmp_path, command))
    message = lab_error(lambda: build_plugin(config))
    first = message.splitlines()[0]
    assert first.startswith("plugin.build failed (rc=3)") and command in first
    assert str(tmp_path) in first                             # where it ran
    assert "main.go:3:1: syntax error" in message and "compiling" in message   # both streams
    assert "hint: fix what the output says" in message
    assert "Traceback" not in message


def test_a_build_past_its_deadline_is_stopped_with_everything_it_started(tmp_path):
    # the build starts a grandchild (a compiler would be one) and records its pid
    command = "echo started; sleep 60 & echo $! > child.pid; wait"
    config = load_config(write_config(tmp_path, command, extra="build_timeout = 0.5"))
    started = time.monotonic()
    message = lab_error(lambda: build_plugin(config))
    assert time.monotonic() - started < 10
    assert "plugin.build did not finish within 0.5 s" in message
    assert "started" in message and "plugin.build_timeout" in message
    child = int((tmp_path / "child.pid").read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the build's own child outlived the timeout"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone as far as the build is concerned
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def test_lab_up_runs_the_build_before_it_looks_for_the_plugin(tmp_path, capsys):
    """No namespaces needed: a failing build stops `lab up` before anything is made, and
    without the build the missing file is what it reports."""
    path = write_config(tmp_path, "echo no compiler here >&2; exit 1",
                        name="t5" + secrets.token_hex(3))
    assert main(["-c", str(path), "up"]) == 1
    err = capsys.readouterr().err
    assert "build the plugin" in err and "plugin.build failed (rc=1)" in err
    assert "no compiler here" in err
    assert "plugin.path" not in err and "• provision" not in err


@pytest.mark.root
def test_lab_up_and_lab_deploy_ship_what_the_build_makes_from_the_source_now(tmp_path, capsys):
    name = "t5" + secrets.token_hex(3)
    path = write_config(tmp_path, BUILD, name=name)
    (tmp_path / "src.txt").write_text("one\n")
    assert not (tmp_path / "out").exists()        # a clean tree: nothing built yet
    from lab.cluster.session import open_lab

    def shipped() -> set[str]:
        with open_lab(path) as lab:
            return {node.run([f"{node.state_dir}/bin/cnilab"]).stdout for node in lab.nodes()}

    try:
        assert main(["-c", str(path), "up"]) == 0, capsys.readouterr().err
        assert "built in" in capsys.readouterr().err
        assert shipped() == {"one\n"}
        (tmp_path / "src.txt").write_text("two\n")       # the developer's edit
        assert main(["-c", str(path), "deploy"]) == 0
        err = capsys.readouterr().err
        assert "build the plugin" in err and "plug -> 2 nodes as cnilab" in err
        assert shipped() == {"two\n"}
        (tmp_path / "src.txt").unlink()                   # a build that now fails …
        (tmp_path / "out" / "plug").unlink()
        assert main(["-c", str(path), "deploy"]) == 1     # … is reported, nothing shipped
        assert "plugin.build failed" in capsys.readouterr().err
        assert shipped() == {"two\n"}
    finally:
        main(["-c", str(path), "down"])
    assert lab_namespaces(name) == []
