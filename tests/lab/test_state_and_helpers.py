"""Issue 11, the harness's part: a state_dir no one else can touch (items 7, 8) and Ctrl-C
while `lab` loads (item 8). `lab down` and the plugin's helpers (item 9):
tests/plugin/test_lab_helpers.py."""
from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import pytest
from test_cli import write_config

from lab import cli
from lab.api import LabError
from lab.cli import main
from lab.nodes import keys
from lab.nodes.providers.netns import lab_namespaces

REPO = Path(__file__).resolve().parents[2]
NOBODY = 65534


# -- the state_dir --------------------------------------------------------------------------

def test_keys_are_made_private_and_reused(tmp_path):
    state = tmp_path / "state"
    path, public = keys.client_keypair(state)
    assert public.startswith("ssh-ed25519 ") and public.endswith(" cnilab")
    assert path.stat().st_mode & 0o777 == 0o600
    assert (state.stat().st_mode & 0o777, path.parent.stat().st_mode & 0o777) == (0o700, 0o700)
    assert path.with_name("id_ed25519.pub").read_text().strip() == public
    assert keys.client_keypair(state) == (path, public)
    assert not list(path.parent.glob("*.tmp")), "a temporary file was left"


def _made_by_someone_else(state: Path) -> Path:
    """What another user prepares: the state_dir, its ssh/ and a world-writable key.tmp."""
    trap = state / "ssh" / "id_ed25519.tmp"
    trap.parent.mkdir(parents=True)
    trap.touch(mode=0o666)
    for p in (state, trap.parent, trap):
        os.chown(p, NOBODY, NOBODY)
    return trap


@pytest.mark.root
def test_a_state_dir_another_user_made_gets_no_key(tmp_path):
    state = tmp_path / "state"
    trap = _made_by_someone_else(state)
    with pytest.raises(LabError) as e:
        keys.client_keypair(state)
    assert "belongs to uid 65534" in e.value.describe()
    assert trap.read_bytes() == b"" and not (state / "ssh" / "id_ed25519").exists()
    with pytest.raises(LabError):
        keys.host_keys(state, "node1")


@pytest.mark.root
@pytest.mark.parametrize("how", ["world-writable", "under a world-writable dir",
                                 "symlink to someone else's", "a file"])
def test_a_state_dir_others_could_swap_is_refused(tmp_path, how):
    state = tmp_path / "state"
    if how == "world-writable":
        state.mkdir()
        state.chmod(0o777)
    elif how == "under a world-writable dir":
        (tmp_path / "open").mkdir()
        (tmp_path / "open").chmod(0o777)
        state = tmp_path / "open" / "state"
    elif how == "symlink to someone else's":
        (tmp_path / "theirs").mkdir(mode=0o700)
        os.chown(tmp_path / "theirs", NOBODY, NOBODY)
        state.symlink_to(tmp_path / "theirs")
    else:
        state.write_text("not a directory")
    with pytest.raises(LabError) as e:
        keys.client_keypair(state)
    assert str(state) in e.value.describe()
    assert not list(tmp_path.rglob("id_ed25519*"))


def test_a_symlinked_state_dir_of_ones_own_is_fine(tmp_path):
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "state").symlink_to(tmp_path / "real")
    path, _ = keys.client_keypair(tmp_path / "state")
    assert (tmp_path / "real" / "ssh" / "id_ed25519").samefile(path)


@pytest.mark.root
def test_lab_up_with_state_dir_a_file_says_so(tmp_path, capsys):
    state = tmp_path / "state"  # where write_config puts the state_dir
    state.write_text("oops")
    name = "t4" + secrets.token_hex(3)
    config = write_config(tmp_path, name)
    assert main(["-c", str(config), "up"]) == 1
    err = capsys.readouterr().err
    assert f"state_dir {state} is not a directory" in err and "Traceback" not in err
    assert lab_namespaces(name) == [] and state.read_text() == "oops"


# -- Ctrl-C ---------------------------------------------------------------------------------

def test_ctrl_c_while_the_subcommands_load_is_no_traceback(monkeypatch, capsys):
    def interrupted(name):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_command_module", interrupted)
    assert main(["up"]) == 130
    captured = capsys.readouterr()
    assert "interrupted" in captured.err and "Traceback" not in captured.err + captured.out


def test_ctrl_c_outside_main_is_exit_130(monkeypatch):
    def interrupted(argv=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "main", interrupted)
    with pytest.raises(SystemExit) as e:
        cli.main_entry()
    assert e.value.code == 130


@pytest.mark.parametrize("delay", [0.3, 0.5, 0.8])
def test_ctrl_c_during_lab_up_as_a_user_presses_it(tmp_path, delay):
    """The real console script; SIGINT once Python itself is up (its own start-up is not
    ours to catch), wherever `lab up` is then."""
    name = "t4" + secrets.token_hex(3)
    config = write_config(tmp_path, name)
    proc = subprocess.Popen([str(REPO / ".venv" / "bin" / "lab"), "-c", str(config), "up"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(2)
        _, err = proc.communicate(timeout=60)
    finally:
        main(["-c", str(config), "down"])
    assert b"Traceback" not in err, err.decode()
    # -2: the signal came as Python was exiting after the work was done (it then re-raises
    # SIGINT on itself, quietly, as a shell expects)
    assert proc.returncode in (0, 1, 130, -2), (proc.returncode, err.decode())


def test_keys_made_at_once_from_many_threads_share_their_directories(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        found = list(pool.map(lambda n: keys.host_keys(tmp_path / "state", f"n{n}"), range(8)))
    assert len({k.public_line for k in found}) == 8
