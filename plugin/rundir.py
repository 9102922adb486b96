"""Where cnilab keeps its locks and the resident helper's socket (os only: the per-call path)."""
from __future__ import annotations

import os

RUN_DIR_ENV = "CNILAB_RUN_DIR"
DEFAULT_RUN_DIR = "/run/cnilab"


def run_dir() -> str:
    """/run/cnilab unless CNILAB_RUN_DIR says otherwise (tests use a private one)."""
    return os.environ.get(RUN_DIR_ENV) or DEFAULT_RUN_DIR
