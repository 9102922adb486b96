"""Live K3s labs for tests: an example config as shipped, brought up on libvirt VMs with the
air-gapped inputs of this machine, always taken down with a leak check.

The inputs (K3s and Multus binaries, built from public source or downloaded on a connected
machine) are never part of the repository: the folder is $CNILAB_AIRGAP_DIR (default
/var/cache/cnilab/airgap). Without them every live test skips, naming what is missing. The pod
and pause images are the product's own (`lab image pod`) and are built into that folder when
absent.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from vm_lab import REPO, free_subnet, free_subnet6, leftovers, require_vm_host

DEFAULT_AIRGAP_DIR = Path("/var/cache/cnilab/airgap")
# what `lab down` says of a lab that does not exist
NO_LAB = "no lab "
REQUIRED = ("k3s", "multus")
LAB_PREFIX = "t10"
BIN = Path(sys.executable).parent
# `lab up` of 3 TCG VMs on 2 cores, its waits stretched for emulation: past 32 minutes with
# Multus still unpacking its image on the agents (2026-12-07); the test budget caps it too
UP_TIMEOUT = 3600
SUITE_TIMEOUT = 2700


def airgap_dir() -> Path:
    """The air-gapped inputs, or a skip that names what is missing and where."""
    folder = Path(os.environ.get("CNILAB_AIRGAP_DIR") or DEFAULT_AIRGAP_DIR)
    missing = [name for name in REQUIRED if not (folder / name).is_file()]
    if missing:
        pytest.skip(f"live K3s needs air-gapped inputs: {', '.join(missing)} not in {folder} "
                    "(set CNILAB_AIRGAP_DIR to the folder holding the k3s and multus binaries; "
                    "docs/k8s.md says how to get them)")
    from lab.kube.pod_images import build_pod_images

    build_pod_images(folder, report=print)     # the product's own images: current or rebuilt
    return folder


DEFAULT_INPUTS_DIR = Path("/var/cache/cnilab/inputs")


def inputs_dir(*, explicit: bool = False) -> Path:
    """Where the newer releases' inputs are ($CNILAB_INPUTS_DIR; docs/k8s.md lists them).
    explicit: only when that variable is set (the half-hour VM labs run on request only)."""
    value = os.environ.get("CNILAB_INPUTS_DIR")
    if explicit and not value:
        pytest.skip("a VM lab of a newer K3s release runs when CNILAB_INPUTS_DIR names its "
                    "inputs (30-90 min under TCG; docs/k8s.md lists the folder); not set")
    return Path(value) if value else DEFAULT_INPUTS_DIR


def k3s_input(minor: int, *, explicit: bool = False) -> tuple[Path, str]:
    """The newest K3s v1.<minor> binary among the inputs and the version it reports, or a skip
    naming what is missing."""
    from lab.kube.airgap import binary_version

    base = inputs_dir(explicit=explicit)
    found = sorted(base.glob(f"k3s-v1.{minor}.*/k3s"),
                   key=lambda p: int(p.parent.name.rsplit(".", 1)[-1]))
    if not found:
        pytest.skip(f"live K3s v1.{minor} needs k3s-v1.{minor}.<patch>/k3s in {base} (built "
                    "from public source; set CNILAB_INPUTS_DIR; docs/k8s.md says how)")
    version = binary_version(found[-1])
    assert version, f"{found[-1]} --version names no K3s version"
    return found[-1], version


def airgap_from_inputs(dest: Path, k3s_version: str, multus_version: str | None = None,
                       multus_mode: str = "host", *, explicit: bool = False,
                       why: str = "") -> Path:
    """An air-gap folder made of links to the inputs of these releases (the k3s binary, the
    thin multus binary or the Multus image, the pod and pause images), or a skip naming
    what is missing."""
    from lab.kube import pod_images

    base = inputs_dir(explicit=explicit)
    k3s = base / f"k3s-{k3s_version.split('+')[0]}" / "k3s"
    multus = base / f"multus-{multus_version}" / "bin" if multus_version else None
    needed = [k3s]
    if multus is not None:
        needed.append(multus / ("multus" if multus_mode == "host" else "multus-daemon"))
    missing = [str(p.relative_to(base)) for p in needed if not p.is_file()]
    if missing:
        pytest.skip(f"live K3s {k3s_version} needs {', '.join(missing)} in {base} (built from "
                    "public source; set CNILAB_INPUTS_DIR; docs/k8s.md says how)"
                    + (f"; {why}" if why else ""))
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "k3s").symlink_to(k3s)
    images = list(pod_images.IMAGES)
    if multus is not None and multus_mode == "host":
        (dest / "multus").symlink_to(multus / "multus")
    elif multus is not None:
        images.append(pod_images.multus_image(multus, multus_version or "", "thick"))
    for _image, built, _ in pod_images.build_pod_images(images=tuple(images), report=print):
        (dest / built.name).symlink_to(built)
    return dest


def example_releases(example: str) -> tuple[str, str | None, str]:
    """The example's [k3s] version, [multus] version (None without Multus) and Multus mode."""
    import tomllib

    data = tomllib.loads((REPO / "examples" / example).read_text())
    multus = data.get("multus")
    return (data["k3s"]["version"], multus["version"] if multus else None,
            multus.get("mode", "host") if multus else "host")


def airgap_for(example: str, dest: Path) -> Path:
    """The air-gap folder for the example's K3s release: $CNILAB_AIRGAP_DIR when its k3s is
    that release, else one linked from the inputs of that release (a skip naming what is
    missing). A machine's air-gap folder holds one release; the examples pin theirs."""
    from lab.kube.airgap import binary_version

    k3s_version, multus_version, multus_mode = example_releases(example)
    folder = Path(os.environ.get("CNILAB_AIRGAP_DIR") or DEFAULT_AIRGAP_DIR)
    found = binary_version(folder / "k3s")
    if found == k3s_version:
        return airgap_dir()
    return airgap_from_inputs(dest, k3s_version, multus_version, multus_mode,
                              why=f"{folder}/k3s is {found or 'not a K3s binary'}")


@dataclass
class LiveLab:
    config: Path
    name: str
    env: dict[str, str]
    up_output: str
    up_seconds: float
    phases: dict[str, float] = field(default_factory=dict)

    def lab(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return run_lab(*args, config=self.config, env=self.env, timeout=timeout)


def run_lab(*args: str, config: Path, env: dict[str, str],
            timeout: float) -> subprocess.CompletedProcess[str]:
    # -c first: after `exec NODE --` everything is the node's command line
    return subprocess.run([str(BIN / "lab"), "-c", str(config), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, env=env, check=False)


def phases_of(output: str) -> dict[str, float]:
    """`✓ step (12.3s)` lines of lab's progress output -> {step: seconds}."""
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r"(?m)^✓ (.+?) \(([\d.]+)s\)$", output)}


def example_copy(example: str, tmp_path: Path) -> tuple[Path, str]:
    """The example with only what keeps test labs apart changed: name, state dir, subnet."""
    name = LAB_PREFIX + secrets.token_hex(3)
    text = (REPO / "examples" / example).read_text()
    text, renamed = re.subn(r'(?m)^name = "[a-z0-9_]+"$',
                            f'name = "{name}"\nstate_dir = "{tmp_path}/state"', text, count=1)
    # each family's underlay moved to a free range: a single string or a list of both
    text, moved = re.subn(r'(?m)^(underlay = .*?)"\d[^"]*"', rf'\g<1>"{free_subnet()}"', text)
    text, moved6 = re.subn(r'(?m)^(underlay = .*?)"[0-9a-f]*:[^"]*"',
                           rf'\g<1>"{free_subnet6()}"', text)
    assert renamed == 1 and moved + moved6 >= 1, f"{example}: no [lab] name or [network] underlay"
    text = text.replace('path = "dist/cnilab"', f'path = "{REPO}/dist/cnilab"')
    config = tmp_path / "lab.toml"
    config.write_text(text)
    return config, name


def seconds_left() -> float | None:
    """Seconds to the test command's deadline (CNILAB_TEST_DEADLINE), None without one."""
    deadline = os.environ.get("CNILAB_TEST_DEADLINE")
    return float(deadline) - time.time() if deadline else None


def require_budget(minutes: float, what: str) -> None:
    """Skips, saying so with the figures, when the test command's time budget cannot hold this
    live lab any more. scripts/test.sh sets CNILAB_TEST_DEADLINE (CI has 90 minutes in all,
    and a run that outlives them lands nothing); a plain pytest run has no budget."""
    left_s = seconds_left()
    if left_s is None:
        return
    left = left_s / 60
    if left < minutes:
        pytest.skip(f"not run: the test budget has {left:.0f} min left and {what} needs up to "
                    f"{minutes:.0f} min on this host today (2 cores, TCG); the VMs of the "
                    "earlier tests took the rest (see --durations)")


# What `lab down` and the leak check need after the last live step, inside the budget.
DOWN_RESERVE = 240


def within_budget(seconds: float) -> float:
    """A step's timeout, cut so that `lab down` still ends before the test command's deadline:
    a lab slower than its estimate fails with a timeout rather than outliving CI's 90 minutes
    (a run killed at the limit lands nothing and prints nothing)."""
    left = seconds_left()
    if left is None:
        return seconds
    return max(60.0, min(seconds, left - DOWN_RESERVE))


# Minutes each live lab of this run took from `lab up` to the end of `lab down`: how fast this
# host runs TCG guests today, which says what a later lab will need.
TAKEN: dict[str, float] = {}


def need_after(example: str, factor: float, default: float) -> float:
    """Minutes a lab needs: `factor` times what `example`'s lab took in this run, if it ran."""
    return factor * TAKEN[example] if example in TAKEN else default


def host_has_address(address: str) -> bool:
    shown = subprocess.run(["ip", "-o", "addr", "show", "to", address], capture_output=True,
                           text=True, check=False)
    return bool(shown.stdout.strip())


def up_with_hook(config: Path, env: dict[str, str], timeout: float,
                 when_address: str, hook: Callable[[], None]) -> subprocess.CompletedProcess[str]:
    """`lab up`, calling hook once this host holds when_address (the lab network exists:
    servers for the nodes can listen there, and only there)."""
    proc = subprocess.Popen([str(BIN / "lab"), "-c", str(config), "up"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
    deadline, hooked = time.monotonic() + timeout, False
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if not hooked and host_has_address(when_address):
                hook()
                hooked = True
            time.sleep(0.5)
        if proc.poll() is None:
            proc.kill()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@contextmanager
def live_lab(example: str, tmp_path: Path, need_minutes: float, *,
             folder: Path | None = None, edit: Callable[[str], str] | None = None,
             hook_at: Callable[[str], str] | None = None,
             hook: Callable[[str], None] | None = None) -> Iterator[LiveLab]:
    """`lab up` of the example (its text passed through edit, e.g. a mirror setting added);
    hook(address) runs once this host holds hook_at(config text); always `lab down`, then
    nothing of the lab may be left."""
    folder = folder or airgap_for(example, tmp_path / "airgap")
    require_vm_host()
    require_budget(need_minutes, f"a live lab of {example}")
    from lab.nodes.providers.libvirt.image_build import build_image

    build_image(report=print)
    config, name = example_copy(example, tmp_path)
    if edit is not None:
        config.write_text(edit(config.read_text()))
    env = {**os.environ, "CNILAB_AIRGAP_DIR": str(folder)}
    started = time.monotonic()
    up_ok = False
    try:    # a `lab up` that times out is taken down too
        if hook is not None and hook_at is not None:
            address = hook_at(config.read_text())
            up = up_with_hook(config, env, within_budget(UP_TIMEOUT), address,
                              lambda: hook(address))
        else:
            up = run_lab("up", config=config, env=env, timeout=within_budget(UP_TIMEOUT))
        seconds = time.monotonic() - started
        assert up.returncode == 0, f"lab up failed:\n{up.stdout}\n{up.stderr}"
        up_ok = True
        output = up.stdout + up.stderr
        yield LiveLab(config, name, env, output, seconds, phases_of(output))
    finally:
        down = run_lab("down", config=config, env=env, timeout=600)
        from lab.config import load_config
        from lab.nodes.providers.libvirt.provider import LibvirtProvider

        provider = LibvirtProvider(load_config(config))
        left = leftovers(provider)
        provider.close()
        if up_ok:   # a lab that failed early says nothing of what a whole one takes
            TAKEN[example] = (time.monotonic() - started) / 60
        # a `lab up` refused before it made anything leaves no lab to take down: its own
        # error is the one to read
        made = up_ok or NO_LAB not in down.stderr
        assert down.returncode == 0 or not made, f"lab down failed:\n{down.stdout}\n{down.stderr}"
        assert not left, f"lab down left: {left}"


def require_podman() -> None:
    if os.geteuid() != 0:
        pytest.skip("container nodes need root")
    missing = [t for t in ("podman", "runc", "nsenter") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"container nodes need {', '.join(missing)} (scripts/setup.sh installs them)")


def podman_leftovers(config: Path) -> list[str]:
    """What of a container-node lab is still on this host: containers, volumes, its switch."""
    from lab.config import load_config
    from lab.nodes.providers.podman.provider import PodmanProvider

    return PodmanProvider(load_config(config)).remains()


PODMAN_UP_TIMEOUT = 900


@contextmanager
def podman_lab(example: str, tmp_path: Path, need_minutes: float, *, folder: Path,
               edit: Callable[[str], str] | None = None) -> Iterator[LiveLab]:
    """`lab up` of a container-node example (its text passed through edit); always
    `lab down`, then no container, volume, switch or host link of it may be left."""
    require_podman()
    require_budget(need_minutes, f"a live lab of {example}")
    config, name = example_copy(example, tmp_path)
    if edit is not None:
        config.write_text(edit(config.read_text()))
    env = {**os.environ, "CNILAB_AIRGAP_DIR": str(folder)}
    started = time.monotonic()
    try:
        up = run_lab("up", config=config, env=env, timeout=within_budget(PODMAN_UP_TIMEOUT))
        seconds = time.monotonic() - started
        assert up.returncode == 0, f"lab up failed:\n{up.stdout}\n{up.stderr}"
        output = up.stdout + up.stderr
        yield LiveLab(config, name, env, output, seconds, phases_of(output))
    finally:
        down = run_lab("down", config=config, env=env, timeout=300)
        left = podman_leftovers(config)
        assert down.returncode == 0, f"lab down failed:\n{down.stdout}\n{down.stderr}"
        assert not left, f"lab down left: {left}"


@dataclass
class SuiteResult:
    passed: list[str]
    failed: dict[str, str]
    skipped: dict[str, str]
    seconds: float


def run_scenarios(live: LiveLab, tmp_path: Path,
                  suites: tuple[str, ...] = ("scenarios/",)) -> SuiteResult:
    """`pytest scenarios/` (or some of its files) against the lab, as a user runs it; the
    JUnit report read back."""
    report = tmp_path / "scenarios.xml"
    started = time.monotonic()
    done = subprocess.run(
        [str(BIN / "pytest"), *suites, "--lab-config", str(live.config),
         "-p", "no:cacheprovider", f"--junitxml={report}", "--lab-logs-dir",
         str(tmp_path / "lab-logs"), "-q"],
        capture_output=True, text=True, timeout=within_budget(SUITE_TIMEOUT), cwd=REPO,
        env=live.env, check=False)
    seconds = time.monotonic() - started
    assert report.is_file(), f"no JUnit report:\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}"
    passed, failed, skipped = [], {}, {}
    times: dict[str, float] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        test = case.get("name", "")
        times[test] = float(case.get("time") or 0)
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        skip = case.find("skipped")
        if problem is not None:
            failed[test] = (problem.get("message") or "") + "\n" + (problem.text or "")[-1500:]
        elif skip is not None:
            skipped[test] = skip.get("message") or ""
        else:
            passed.append(test)
    slowest = sorted(times.items(), key=lambda item: -item[1])[:8]
    print(f"scenario suite: {seconds:.0f} s; slowest: " +
          ", ".join(f"{t} {s:.0f} s" for t, s in slowest))   # shown when the test fails
    return SuiteResult(passed, failed, skipped, seconds)


def scenario(test_id: str) -> str:
    """`test_x[v4]` -> `test_x`: expectations hold for every family a scenario runs in."""
    return test_id.split("[", 1)[0]


# Through Kubernetes the kubelet owns the runtime: the contract checks that call it directly
# (ADD on an existing ifname, DEL with no netns, CHECK of an unknown container, every claimed
# version) say so and skip, on every K3s lab.
KUBE_SKIPS = {name: "these calls go to the node's runtime directly" for name in (
    "test_add_on_an_existing_ifname_fails_with_a_cni_error_and_leaks_nothing",
    "test_del_with_an_empty_or_vanished_netns_succeeds_and_frees_the_lease",
    "test_check_of_a_container_never_added_fails",
    "test_every_version_the_plugin_claims_serves_add_check_and_del")}
# scenarios/test_chained.py judges plugins chained after the one under test: none in these labs
KUBE_SKIPS.update({name: "chains no" for name in (
    "test_tuning_sets_its_sysctls_in_every_pod",
    "test_tuning_gives_the_pod_the_mac_the_runtime_asks_for",
    "test_bandwidth_shapes_the_pods_host_side_as_asked",
    "test_portmap_forwards_the_host_port_to_the_pod_until_del")})


def assert_suite_passed(result: SuiteResult, expected_skips: dict[str, str]) -> None:
    """No failure, and every skip one of the expected ones with its true reason."""
    assert not result.failed, "\n\n".join(f"{t}: {m}" for t, m in result.failed.items())
    expected_skips = {**KUBE_SKIPS, **expected_skips}
    unexpected = {t: why for t, why in result.skipped.items()
                  if expected_skips.get(scenario(t), "\0") not in why}
    assert not unexpected, f"skipped without a true reason: {unexpected}"
