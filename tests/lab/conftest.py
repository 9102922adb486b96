"""Fixtures shared by tests/lab (and the end-to-end VM tests that sit under it)."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from vm_lab import VmLab, provisioned_vm_lab


@pytest.fixture(scope="module")
def vm_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmLab]:
    """A provisioned two-node libvirt lab (n1, n2) shared by one test module, destroyed (with a
    leak check) when that module is done: TCG guests left running would slow every later test.
    Tests using it must be marked `vm` (and `slow`)."""
    with provisioned_vm_lab(tmp_path_factory.mktemp("vm-lab"), ("n1", "n2")) as lab:
        yield lab
