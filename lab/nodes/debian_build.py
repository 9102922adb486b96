"""What building from Debian packages needs wherever it happens (the VM image, the pod images):
the mirror this machine already reaches, the apt sources for a suite, and build steps run with
their output in one log and a deadline each."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from lab.api import LabError

DEFAULT_MIRROR = "http://deb.debian.org/debian"
STEP_TIMEOUT = 1800      # a slow mirror or a large image; never wait forever


def apt_mirror(sources_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror apt on this machine already uses (it is reachable), or deb.debian.org."""
    files = [sources_dir / "sources.list", *sorted((sources_dir / "sources.list.d").glob("*"))]
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        for url in re.findall(r"(?:URIs:|^deb)\s+(\S+)", text, flags=re.MULTILINE):
            if url.rstrip("/").endswith("/debian"):
                return url.rstrip("/")
    return DEFAULT_MIRROR


def apt_sources(mirror: str, suite: str) -> list[str]:
    """mmdebstrap's source lines: the suite, its updates and its security updates."""
    security = mirror.rsplit("/", 1)[0] + "/debian-security"
    return [f"deb {mirror} {suite} main", f"deb {mirror} {suite}-updates main",
            f"deb {security} {suite}-security main"]


def start_build(folder: Path, name: str) -> tuple[Path, Path]:
    """(work dir, log) of a build of name in folder: this process's own empty work dir (what a
    crashed earlier build left is gone) and an empty log beside the result."""
    work = folder / f".build-{name}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log = folder / f"{name}.build.log"
    log.write_text("")
    return work, log


def run_step(argv: list[str], log: Path, step: str, *, what: str, install_hint: str,
             timeout: float = STEP_TIMEOUT) -> None:
    """Runs one build step, appending its output to log; a failure names the step and shows
    the log's tail."""
    with log.open("a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        try:
            proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False,
                                  timeout=timeout)
        except FileNotFoundError:
            raise LabError(f"{what}: {argv[0]} is not installed", hint=install_hint) from None
        except subprocess.TimeoutExpired:
            raise LabError(f"{what}: {step} took over {timeout:.0f} s",
                           hint=f"full log: {log}") from None
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-30:]
        raise LabError(f"{what} failed while {step} (rc={proc.returncode})",
                       output="\n".join(tail), hint=f"full log: {log}")
