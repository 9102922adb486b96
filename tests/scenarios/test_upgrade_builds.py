"""The upgrade scenario's builds (scenarios/upgrade_builds.py): which files the options give,
and a second build that differs in its bytes and still runs, or a skip that says why."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scenarios.upgrade_builds import NoUpgrade, is_ours, upgrade_pair

ROOT = Path(__file__).resolve().parents[2]
SHELL_PLUGIN = ROOT / "examples" / "shell-plugin" / "myptp"


def _script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_a_script_plugin_gets_a_byte_different_copy_that_answers_the_same(tmp_path):
    lab_plugin = _script(tmp_path / "myptp", "#!/bin/sh\necho '{\"cniVersion\":\"1.0.0\"}'")
    work = tmp_path / "work"
    work.mkdir()
    pair = upgrade_pair(lab_plugin, None, None, work)
    assert pair.old == pair.lab and pair.new.sha256 != pair.lab.sha256
    ran = [subprocess.run([str(b.path)], capture_output=True, text=True, check=True).stdout
           for b in (pair.old, pair.new)]
    assert ran[0] == ran[1] == '{"cniVersion":"1.0.0"}\n'


def test_the_shell_example_copy_still_answers_version(tmp_path):
    pair = upgrade_pair(SHELL_PLUGIN, None, None, tmp_path)
    version = subprocess.run([str(pair.new.path)], input="{}", capture_output=True, text=True,
                             env={"CNI_COMMAND": "VERSION", "PATH": "/usr/bin:/bin"})
    assert version.returncode == 0 and '"supportedVersions"' in version.stdout


def test_a_binary_plugin_gets_bytes_past_its_end_and_still_runs(tmp_path):
    binary = tmp_path / "echo"
    shutil.copyfile("/bin/echo", binary)
    binary.chmod(0o755)
    pair = upgrade_pair(binary, None, None, tmp_path)
    assert pair.new.sha256 != pair.lab.sha256 and "appended past its end" in pair.new.origin
    said = subprocess.run([str(pair.new.path), "still", "runs"], capture_output=True, text=True)
    assert (said.returncode, said.stdout) == (0, "still runs\n")


def test_a_script_carrying_binary_data_is_skipped_naming_the_options(tmp_path):
    carrier = tmp_path / "sfx"
    carrier.write_bytes(b"#!/bin/sh\nexit 0\nPK\x03\x04\0\0payload")
    carrier.chmod(0o755)
    with pytest.raises(NoUpgrade) as caught:
        upgrade_pair(carrier, None, None, tmp_path)
    said = str(caught.value)
    assert "a script carrying binary data" in said and "--lab-upgrade-to PATH" in said
    assert said.startswith("not applicable")


def test_naming_the_old_build_upgrades_to_the_labs_plugin(tmp_path):
    old = _script(tmp_path / "old", "#!/bin/sh\necho old\n")
    lab_plugin = _script(tmp_path / "lab", "#!/bin/sh\necho new\n")
    work = tmp_path / "work"
    work.mkdir()
    pair = upgrade_pair(lab_plugin, str(old), None, work)
    assert (pair.old.path, pair.new) == (old, pair.lab)
    assert f"--lab-upgrade-from {old}" in pair.describe()
    # the lab's plugin is kept as it was: a rebuild during the run does not change what goes
    # back on the nodes
    lab_plugin.write_text("#!/bin/sh\necho rebuilt\n")
    assert pair.lab.path.read_text() == "#!/bin/sh\necho new\n"


def test_the_same_bytes_twice_is_nothing_to_upgrade(tmp_path):
    lab_plugin = _script(tmp_path / "lab", "#!/bin/sh\necho same\n")
    same = _script(tmp_path / "same", "#!/bin/sh\necho same\n")
    with pytest.raises(NoUpgrade, match=r"nothing to upgrade.*same bytes"):
        upgrade_pair(lab_plugin, None, str(same), tmp_path)


def test_a_named_build_that_is_not_an_executable_is_an_error_not_a_skip(tmp_path):
    lab_plugin = _script(tmp_path / "lab", "#!/bin/sh\n")
    said = re.escape(f"--lab-upgrade-to {tmp_path}/nope is not an executable file")
    with pytest.raises(ValueError, match=said):
        upgrade_pair(lab_plugin, None, str(tmp_path / "nope"), tmp_path)


def test_our_plugin_is_rebuilt_with_another_build_id(tmp_path):
    built = tmp_path / "cnilab"
    done = subprocess.run([sys.executable, "-m", "plugin.build", "-o", str(built)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    work = tmp_path / "work"
    work.mkdir()
    pair = upgrade_pair(built, None, None, work)
    assert is_ours(pair.new.path.read_bytes()) and pair.new.sha256 != pair.lab.sha256
    ids = [b.path.read_bytes().split(b"\n", 2)[1].split()[3] for b in (pair.lab, pair.new)]
    assert ids[0] != ids[1], ids
    assert "plugin.build --stamp" in pair.new.origin
    # still with bytecode: a build without it compiles pyroute2 in the new pods' first calls
    assert b"pyroute2.zip" in pair.new.path.read_bytes()
    assert pair.new.path.stat().st_size > 0.9 * pair.lab.path.stat().st_size


def test_ours_without_a_checkout_to_build_from_is_skipped_saying_so(tmp_path, monkeypatch):
    ours = _script(tmp_path / "cnilab", "#!/bin/sh\n# cnilab build 0123 sha256 4567\n")
    failing = _script(tmp_path / "python", "#!/bin/sh\necho 'build failed: no pyproject.toml"
                                           "' >&2; exit 1\n")
    monkeypatch.setattr(sys, "executable", str(failing))
    with pytest.raises(NoUpgrade) as caught:
        upgrade_pair(ours, None, None, tmp_path)
    said = str(caught.value)
    assert "failed (it builds from a cnilab checkout): build failed: no pyproject.toml" in said
    assert "--lab-upgrade-to PATH" in said
