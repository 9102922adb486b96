"""What pyroute2 asks the `platform` module at import, answered without running programs.

pyroute2.config calls platform.uname() and platform.architecture() when it is imported, and
CPython answers the processor field by running `uname -p` and the pointer size by running
`file -b <python>`, both looked up on the caller's PATH: two extra processes on every start
of the plugin that loads pyroute2 (the first call, or every call without the resident
helper), and a program from whatever directory the runtime's PATH names, run as root.

pyroute2 uses only the kernel release, the machine (os.uname()) and the pointer size
(struct), so the two answers are filled in from those before pyroute2 is imported: the
processor as Debian's `uname -p` gives it ("unknown", which platform reports as ""), the
pointer size as architecture() reports it when `file` says nothing. Private hooks of
`platform` (CPython 3.9-3.13), each used only where it exists.
"""
from __future__ import annotations

from typing import Any


def _no_file_output(_target: str, default: str = "") -> str:
    return default


def _blank() -> str:
    return ""


def settle() -> None:
    """Idempotent; call before the first pyroute2 import (which imports `platform` anyway:
    importing it here, not at module level, keeps VERSION and config errors from paying)."""
    import platform

    if hasattr(platform, "_syscmd_file"):
        platform._syscmd_file = _no_file_output
    processor = getattr(platform, "_Processor", None)
    if processor is not None:
        processor.get_linux = staticmethod(_blank)


def iproute_class() -> Any:
    """pyroute2's IPRoute, with `platform` settled before pyroute2 is first imported: every
    place that opens netlink gets the class here (and imports pyroute2 before anything else
    it does, so an untrusted copy of it is refused first)."""
    settle()
    from pyroute2.iproute.linux import IPRoute

    return IPRoute
