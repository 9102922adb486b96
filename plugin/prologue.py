"""The `#!/bin/sh` prologue of dist/cnilab (build time only: the node runs the rendered text).

It hands the call to this build's resident helper with shell builtins only when the helper
is up (plugin/handoff.py has the protocol), and otherwise starts python3 on the zip archive
that follows it. Every path ends in `exec` or `exit`, so the shell never parses the archive.

Python is started with -c and a 5-line bootstrap rather than on the file itself: running a
zip goes through runpy, which imports contextlib, collections and importlib.util first (~9 ms
per call here); zipimport alone is frozen into the interpreter. -I -S: no site import (~5 ms)
and no user site or PYTHON* variables changing what runs.
"""
from __future__ import annotations

from plugin import handoff

TEMPLATE = r"""#!/bin/sh
# cnilab CNI plugin. This shell prologue hands the call to the resident helper when it is up
# (no Python starts: plugin/handoff.py), else runs the zip archive below with python3 3.9+.
B="import sys
if sys.version_info < (3, 9):
    sys.stdout.write('{\"cniVersion\":\"1.0.0\",\"code\":5,'
                     '\"msg\":\"cnilab needs python3 3.9+\"}\\n')
    sys.exit(1)
sys.path.insert(0, sys.argv[1])
from plugin.fastpath import main
sys.exit(main(sys.argv[1:]))"
py() {
  for p in python3 /usr/bin/python3 /usr/local/bin/python3; do
    command -v "$p" >/dev/null 2>&1 && exec "$p" -I -S -c "$B" "$0" "$@"
  done
  echo '{"cniVersion":"1.0.0","code":5,"msg":"cnilab needs python3 (3.9 or newer) on the node"}'
  exit 1
}
case ${CNILAB_RESIDENT-} in 0|[Ff][Aa][Ll][Ss][Ee]|[Nn][Oo]|[Oo][Ff][Ff]) py ;; esac
[ $# = 0 ] || py "$@"
h=${CNILAB_RUN_DIR:-/run/cnilab}
h=${h%/}/resident-@BUILD@
d=$h.d
# The helper is up, and that pid is still the helper: it holds our request FIFO.
{ read -r p <"$h.pid"; } 2>/dev/null && [ "/proc/$p/fd/@LIVENESS_FD@" -ef "$d/q" ] || py
set -C
trap '' PIPE
n=$(($$ % @SLOTS@))
i=1
until { echo $$ >"$d/$n.lock"; } 2>/dev/null; do
  [ $i -lt @SLOTS@ ] || py
  i=$((i + 1))
  n=$(((n + 1) % @SLOTS@))
done
# The worker reads our stdin from fd @STDIN_FD@: `read <&4` below moves fd 0 while it waits.
exec @STDIN_FD@<&0
{ printf '%-@PAD@s\n' "$n $$" >"$d/q"; } 2>/dev/null || py
{
  read -r c <&4 || c=
  case $c in
    F) py ;;
    R) py <&4 ;;
    '' | *[!0-9]*)
      echo '{"cniVersion":"1.0.0","code":11,"msg":"cnilab: the resident helper'\
' stopped during the call; try again"}'
      exit 1 ;;
  esac
  exit "$c"
} 4<"$d/$n"
py
"""


def render(build_id: str) -> bytes:
    text = (TEMPLATE.replace("@BUILD@", build_id)
            .replace("@LIVENESS_FD@", str(handoff.LIVENESS_FD))
            .replace("@SLOTS@", str(handoff.SLOTS))
            .replace("@PAD@", str(handoff.RECORD_SIZE - 1))
            .replace("@STDIN_FD@", str(handoff.CALLER_STDIN_FD)))
    return text.encode("ascii")
