"""What `make demo` and `make test` install, as the README's first screen says."""
from __future__ import annotations

import re
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[2]


def _extras(name: str, extras: dict[str, list[str]]) -> set[str]:
    """Every requirement an extra pulls in, through cnilab[...] references."""
    found: set[str] = set()
    for requirement in extras[name]:
        nested = re.fullmatch(r"cnilab\[(.+)\]", requirement)
        if nested:
            for inner in nested.group(1).split(","):
                found |= _extras(inner.strip(), extras)
        else:
            found.add(re.split(r"[<>=\[ ]", requirement)[0])
    return found


def test_make_demo_installs_what_its_pytest_options_and_examples_use():
    """Before: `Unknown config option: timeout` (pytest-timeout came only with [dev]), and the
    shell-plugin example's jq missing."""
    script = (REPO / "scripts" / "setup.sh").read_text()
    netns_packages = script.split("NETNS_PACKAGES=(", 1)[1].split(")", 1)[0]
    assert re.search(r"^\s*jq\b", netns_packages, re.M)
    netns_extras = re.search(r'netns\) .*EXTRAS="\[(\w+)\]"', script)
    assert netns_extras is not None
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    extras = project["project"]["optional-dependencies"]
    options = project["tool"]["pytest"]["ini_options"]
    if "timeout" in options:
        assert "pytest-timeout" in _extras(netns_extras.group(1), extras)
    assert "pytest-timeout" in _extras("dev", extras)


def test_readme_first_screen_has_the_two_commands_and_what_make_test_does():
    readme = (REPO / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = quick.split("```sh\n", 1)[1].split("```", 1)[0]
    assert [line.split("#")[0].strip() for line in block.splitlines()] == ["make demo",
                                                                          "make test"]
    said = quick.split("```", 2)[2]
    for what in ("qemu", "libvirt", "podman", "mmdebstrap", "sshd", "vagrant",
                 "leaves them running", "VM image"):
        assert what in said, what
    assert re.search(r"takes \d+(-\d+)? minutes", said), "how long make test takes"


def test_docs_install_from_a_checkout_not_from_the_index():
    """`pip install cnilab` fails: there is no such package on the index."""
    for doc in [REPO / "README.md", *(REPO / "docs").glob("*.md")]:
        for line in doc.read_text().splitlines():
            assert not re.search(r"pip install cnilab\b(?!\[)", line), (doc.name, line)
    assert "pip install -e /path/to/cnilab" in (REPO / "docs" / "scenarios.md").read_text()
