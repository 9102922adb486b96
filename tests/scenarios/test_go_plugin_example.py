"""A plugin in Go end to end: examples/go-plugin (go-ptp, on the CNI project's Go libraries),
built by `[plugin] build` from a clean copy of the tree (no binary, no vendor/: its modules come
from the Go module cache or the proxy), then judged by every scenario on a 3-node netns lab."""
from __future__ import annotations

import re
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from example_labs import ROOT, assert_every_scenario_that_applies_passes, lab

pytestmark = [pytest.mark.root, pytest.mark.slow]

EXAMPLES = ROOT / "examples"
BINARY = "go-ptp"
# A cold build (no Go build cache, modules from the proxy) took minutes on 2 shared cores.
UP_TIMEOUT = 1500


def clean_tree(dest: Path) -> Path:
    """The example as a fresh clone has it: the config, the Go sources, go.mod/go.sum and the
    cross-node hook it borrows from the shell-plugin example; never a built binary."""
    examples = dest / "examples"
    shutil.copytree(EXAMPLES / "go-plugin", examples / "go-plugin",
                    ignore=shutil.ignore_patterns(BINARY, "vendor"))
    (examples / "shell-plugin").mkdir()
    shutil.copy2(EXAMPLES / "shell-plugin" / "peers-hostgw.sh", examples / "shell-plugin")
    shutil.copy2(EXAMPLES / "netns-go-plugin.toml", examples)
    return examples / "netns-go-plugin.toml"


def test_the_go_plugin_example_builds_from_a_clean_tree_and_passes_every_scenario(tmp_path):
    if shutil.which("go") is None:
        pytest.skip("the Go plugin example needs the Go toolchain (`go` on PATH, 1.24 or "
                    "newer, or a GOTOOLCHAIN it may download) to build go-ptp")
    assert shutil.which("jq"), "the example's node_setup hook needs jq (scripts/setup.sh)"
    config = clean_tree(tmp_path / "tree")
    binary = config.parent / "go-plugin" / BINARY
    assert not binary.exists()
    name = "t6" + secrets.token_hex(3)
    common = ["-c", str(config), "--name", name]
    started = time.monotonic()
    up = lab("up", *common, timeout=UP_TIMEOUT)
    try:
        assert up.returncode == 0, up.stderr[-4000:]
        built = re.search(r"built in ([0-9.]+)s", up.stderr)
        assert built and binary.is_file(), up.stderr[-4000:]    # lab up ran the build
        # in the report (-rP, junit system-out): cold and warm Go caches differ by minutes
        print(f"go build {built.group(1)} s, lab up {time.monotonic() - started:.1f} s")
        assert "go-ptp serves cniVersion 1.0.0" in up.stderr
        assert_every_scenario_that_applies_passes(config, name, tmp_path)
    finally:
        down = lab("down", *common)
    assert down.returncode == 0, down.stderr
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"cnilab-{name}-" not in left, left
