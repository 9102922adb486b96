"""The two builds a plugin upgrade is judged with: which files, and a second build when the
user names none.

The old build (`--lab-upgrade-from`, else the lab's plugin) makes the first pods; the new build
(`--lab-upgrade-to`, else the lab's plugin) is deployed over it. Naming only the old build is
the everyday case: "from the last release to what I am working on". Naming neither judges a
re-deploy of the lab's plugin as another file, which only means something when the bytes
differ (a deploy of the same bytes replaces nothing): ours is rebuilt (`python -m
plugin.build --stamp`, another build id), a text script is copied with a comment line
appended, an ELF executable with bytes appended past its end, and anything else (a script
carrying an archive, an unknown format) cannot be changed safely without its source: the
scenario skips and says which option to give.
"""
from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from lab.config import CNILAB_MARK

BUILD_TIMEOUT = 300.0     # seconds `python -m plugin.build` may take (about one here)
UPGRADE_STAMP = "a second build for the upgrade scenario"
SECOND_BUILD_LINE = f"# cnilab: {UPGRADE_STAMP}\n".encode()


class NoUpgrade(Exception):
    """Why no upgrade can be judged on this lab: the scenario's skip reason."""


@dataclass(frozen=True)
class Build:
    path: Path
    sha256: str
    origin: str        # what a reader of a failure knows it as (names the file)

    def describe(self) -> str:
        return f"{self.origin} (sha256 {self.sha256[:12]})"


@dataclass(frozen=True)
class UpgradePair:
    lab: Build         # what the lab had when the scenario began: what it ends with
    old: Build
    new: Build

    def describe(self) -> str:
        return f"upgrade from {self.old.describe()} to {self.new.describe()}"


def build_of(path: Path, origin: str) -> Build:
    """A plugin file as a Build; ValueError naming the option when it is not one."""
    if not path.is_file() or not os.access(path, os.X_OK):
        raise ValueError(f"{origin} is not an executable file")
    return Build(path, hashlib.sha256(path.read_bytes()).hexdigest(), origin)


def is_ours(data: bytes) -> bool:
    """A dist/cnilab: its second line says which build it is."""
    lines = data[:256].split(b"\n", 2)
    return len(lines) > 1 and lines[1].startswith(CNILAB_MARK)


def second_build(lab: Build, workdir: Path) -> Build:
    """A byte-different build of the lab's plugin, or NoUpgrade saying why there is none."""
    data = lab.path.read_bytes()
    if is_ours(data):
        return rebuild_ours(lab, workdir)
    if data.startswith(b"#!") and b"\0" not in data:
        tail, how = (b"" if data.endswith(b"\n") else b"\n") + SECOND_BUILD_LINE, \
            "a comment line appended"
    elif data.startswith(b"\x7fELF"):
        # The loader maps only what the program headers name: bytes past the end are never
        # read (a binary that checksums its own file would notice: name a build then).
        tail, how = b"\0" + SECOND_BUILD_LINE, "bytes appended past its end"
    else:
        kind = "a script carrying binary data" if data.startswith(b"#!") else \
            "neither a script nor an ELF executable"
        raise NoUpgrade(f"not applicable: no second build of {lab.origin} to upgrade to: it "
                        f"is {kind}, and changing its bytes without its source could break "
                        "it; pass --lab-upgrade-to PATH (another build of it) or "
                        "--lab-upgrade-from PATH (an older one)")
    copy = workdir / "second-build"
    copy.write_bytes(data + tail)
    copy.chmod(0o755)
    return build_of(copy, f"{lab.origin} with {how}, as {copy}")


def rebuild_ours(lab: Build, workdir: Path) -> Build:
    """Our plugin from this harness's source, stamped (another build id, still with bytecode:
    a build without it spends a second compiling pyroute2 in its first calls); without the
    stamp when the lab's plugin is the stamped build already."""
    out = workdir / "second-build"
    for flags in (["--stamp", UPGRADE_STAMP], []):
        command = shlex.join(["python", "-m", "plugin.build", *flags])
        try:
            done = subprocess.run([sys.executable, "-m", "plugin.build", "-o", str(out), *flags],
                                  capture_output=True, text=True, timeout=BUILD_TIMEOUT,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise NoUpgrade(f"not applicable: `{command}` took over {BUILD_TIMEOUT:.0f} s; "
                            "pass --lab-upgrade-to PATH") from None
        if done.returncode != 0:
            said = (done.stderr or done.stdout).strip()[-300:]
            raise NoUpgrade(f"not applicable: no second build of our plugin: `{command}` "
                            f"failed (it builds from a cnilab checkout): {said}; pass "
                            "--lab-upgrade-to PATH")
        built = build_of(out, f"`{command}` of this harness's source, as {out}")
        if built.sha256 != lab.sha256:
            return built
    raise NoUpgrade("not applicable: both builds of this source are byte-identical to the "
                    "lab's plugin; pass --lab-upgrade-to PATH")


def upgrade_pair(lab_plugin: Path, given_from: str | None, given_to: str | None,
                 workdir: Path) -> UpgradePair:
    """The old and new builds the options ask for; the lab's plugin is kept as a copy, so it
    is what goes back on the nodes even if its file is rebuilt during the run."""
    kept = workdir / "lab-plugin"
    shutil.copyfile(lab_plugin, kept)
    kept.chmod(0o755)
    lab = build_of(kept, f"the lab's plugin.path {lab_plugin}")
    old = build_of(Path(given_from), f"--lab-upgrade-from {given_from}") if given_from else lab
    if given_to:
        new = build_of(Path(given_to), f"--lab-upgrade-to {given_to}")
    elif given_from:
        new = lab
    else:
        new = second_build(lab, workdir)
    if new.sha256 == old.sha256:
        raise NoUpgrade(f"not applicable: nothing to upgrade: the old build "
                        f"{old.describe()} and the new build {new.describe()} are the same "
                        "bytes")
    return UpgradePair(lab, old, new)
