"""`python -m plugin.build`: writes dist/cnilab, the whole plugin in one executable file.

The file is a shell prologue followed by a zip archive (Python runs a zip whose
__main__.py is at the top, whatever precedes it):

    #!/bin/sh                             plugin/delivery/prologue.py: hands the call to
    # cnilab build <id> sha256 <digest>   the resident helper with shell builtins, or execs
    ...                                   python3 -I -S (the digest is of the zip below)
    <zip>  __main__.py                    the Python entry (plugin.delivery.fastpath)
           plugin/...                     this package
           pyroute2.zip                   the pinned pyroute2, vendored (the node has none)
           plugin/delivery/_build.py      BUILD_ID: a redeploy gets a fresh resident helper
           STAMP                          only with --stamp: a label of this build

Why a shell prologue rather than `#!/usr/bin/env python3`: when the helper is up, no Python
starts per call at all (~12 ms saved); otherwise it passes `-I -S` and tries the usual places
when the runtime's PATH is bare. The build is reproducible: same sources, same bytes, same
BUILD_ID. `--stamp TEXT` puts a label in the archive, so two builds of one source (a release
and a rebuild for a test of upgrades) are different files with different BUILD_IDs.

Bytecode: zipimport cannot write .pyc files, so a zip of sources compiles pyroute2 on every
in-process call. The archive carries legacy-layout .pyc files (module.pyc next to module.py)
compiled by the build interpreter: zipimport uses them when the node runs the same Python
minor version and quietly falls back to the sources otherwise (see docs/speed.md for figures).
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import marshal
import os
import re
import sys
import zipfile
from importlib.util import MAGIC_NUMBER
from pathlib import Path
from typing import Optional

from plugin.delivery import prologue, vendor

REPO = Path(__file__).resolve().parents[2]
PLUGIN_DIR = REPO / "plugin"
DEFAULT_OUTPUT = REPO / "dist" / "cnilab"
STAMP_ENTRY = "STAMP"
# Not needed on a node: the builder itself.
PLUGIN_EXCLUDE = {"build.py", "delivery/build.py", "delivery/_build.py", "__main__.py",
                  "delivery/prologue.py", "netconf.py"}
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)

ZIP_MAIN = '''"""`python3 dist/cnilab`: the same entry as the shell prologue's bootstrap."""
import sys

if sys.version_info < (3, 9):
    sys.stdout.write('{"cniVersion":"1.0.0","code":5,"msg":"cnilab needs python3 >= 3.9",'
                     '"details":""}\\n')
    sys.exit(1)

from plugin.delivery.fastpath import main  # noqa: E402

sys.exit(main(sys.argv))
'''


class BuildError(Exception):
    pass


def pinned_pyroute2_version(pyproject: Path = REPO / "pyproject.toml") -> str:
    match = re.search(r'"pyroute2==([^"]+)"', pyproject.read_text(encoding="utf-8"))
    if not match:
        raise BuildError(f"{pyproject}: no pinned pyroute2==X.Y.Z dependency")
    return match.group(1)


def installed_pyroute2() -> tuple[Path, str]:
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or not spec.submodule_search_locations:
        raise BuildError("pyroute2 is not installed in this Python: "
                         f"{sys.executable} -m pip install -e '.[dev]'")
    package = Path(next(iter(spec.submodule_search_locations)))
    from importlib.metadata import version

    return package, version("pyroute2")


def _sources(root: Path, arc_root: str, exclude: set[str]) -> list[tuple[str, Path]]:
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if "__pycache__" in rel.parts or rel.as_posix() in exclude:
            continue
        found.append((f"{arc_root}/{rel.as_posix()}", path))
    return found


def _pyc(source: bytes, arcname: str) -> bytes:
    """An unchecked hash-based .pyc (PEP 552) for zipimport.

    Hash-based, not timestamp-based: zip entries carry a fixed date for reproducible builds,
    and an unchecked pyc is trusted as is (the archive is immutable). Another Python version
    sees a foreign magic number and compiles the source next to it instead.
    """
    code = compile(source, arcname, "exec", dont_inherit=True, optimize=0)
    flags = 0b01  # hash-based, check_source off
    header = MAGIC_NUMBER + flags.to_bytes(4, "little") + importlib.util.source_hash(source)
    return header + marshal.dumps(code)


def collect(with_bytecode: bool = True) -> list[tuple[str, bytes]]:
    pinned = pinned_pyroute2_version()
    package, found = installed_pyroute2()
    if found != pinned:
        raise BuildError(f"pyroute2 {found} is installed but pyproject pins {pinned}: "
                         f"{sys.executable} -m pip install pyroute2=={pinned}")
    entries: list[tuple[str, bytes]] = [("__main__.py", ZIP_MAIN.encode())]
    entries += _modules(_sources(PLUGIN_DIR, "plugin", PLUGIN_EXCLUDE), with_bytecode)
    vendored = _modules(_sources(package, "pyroute2", set()), with_bytecode)
    dist_info = package.parent / f"pyroute2-{found}.dist-info"
    for name in ("LICENSE", "LICENSE.Apache-2.0", "LICENSE.GPL-2.0-or-later"):
        if (dist_info / name).is_file():
            vendored.append((f"pyroute2/{name}", (dist_info / name).read_bytes()))
    # One member, not 1,200: see plugin/vendor.py for why.
    entries.append((vendor.INNER, archive(vendored)))
    return entries


def _modules(files: list[tuple[str, Path]], with_bytecode: bool) -> list[tuple[str, bytes]]:
    entries = []
    for arcname, path in files:
        entries += _modules_from_source(arcname, path.read_bytes(), with_bytecode)
    return entries


def _modules_from_source(arcname: str, source: bytes,
                         with_bytecode: bool) -> list[tuple[str, bytes]]:
    entries = [(arcname, source)]
    if with_bytecode:
        entries.append((arcname[:-3] + ".pyc", _pyc(source, arcname)))
    return entries


def build_id(entries: list[tuple[str, bytes]]) -> str:
    digest = hashlib.sha256()
    # The prologue is part of what runs: a change to it alone is a new build too.
    for arcname, data in sorted([*entries, ("<prologue>", prologue.TEMPLATE.encode())]):
        digest.update(arcname.encode() + b"\0" + len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()[:20]


def archive(entries: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for arcname, data in entries:
            info = zipfile.ZipInfo(arcname, date_time=ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            # Stored, not deflated: each call reads a few entries; inflating costs time.
            info.compress_type = zipfile.ZIP_STORED
            zf.writestr(info, data)
    return buffer.getvalue()


def build(output: Path = DEFAULT_OUTPUT, with_bytecode: bool = True, stamp: str = "") -> str:
    """Writes the executable; returns its BUILD_ID. Atomic: a running node never sees half."""
    entries = collect(with_bytecode)
    if stamp:
        entries.append((STAMP_ENTRY, stamp.encode() + b"\n"))
    ident = build_id(entries)
    # Its bytecode too: every call imports it, and compiling even one line from a zip
    # costs ~2 ms.
    entries += _modules_from_source("plugin/delivery/_build.py", f'BUILD_ID = "{ident}"\n'.encode(),
                                    with_bytecode)
    zipped = archive(entries)
    blob = prologue.render(ident, vendor.header_line(ident, zipped)) + zipped
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(blob)
        tmp.chmod(0o755)
        os.replace(tmp, output)
    finally:
        if tmp.exists():
            tmp.unlink()
    return ident


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m plugin.build", description=__doc__.split(
        "\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--no-bytecode", action="store_true",
                        help="sources only (smaller; every in-process call compiles pyroute2)")
    parser.add_argument("--stamp", default="", metavar="TEXT",
                        help="a label kept in the build (so in its id): tells apart two builds "
                             "of one source")
    args = parser.parse_args(argv)
    try:
        ident = build(args.output, with_bytecode=not args.no_bytecode, stamp=args.stamp)
    except (BuildError, OSError) as e:
        print(f"build failed: {e}", file=sys.stderr)
        return 1
    size = args.output.stat().st_size
    print(f"wrote {args.output} ({size // 1024} KiB, build {ident}); install: copy it to "
          "the CNI bin dir (e.g. install -m 755 dist/cnilab /opt/cni/bin/cnilab; a cp over "
          "the live file is safe too)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
