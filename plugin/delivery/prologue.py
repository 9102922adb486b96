"""The `#!/bin/sh` prologue of dist/cnilab (build time only: the node runs the rendered text).

It hands the call to this file's resident helper with shell builtins only when the helper is
up (plugin/delivery/handoff.py has the protocol and why each step is safe), and otherwise
starts python3 on the zip archive that follows it. Every path ends in `exec` or `exit`, so
the shell never parses the archive, and all of it is one brace group, so the shell has read
and parsed the whole prologue before it runs a line of it. Its second line names the build
and the digest of the archive: plugin/delivery/vendor.py copies the file only when both
match.

Python is started with -c and a short bootstrap rather than on the file itself: running a
zip goes through runpy, which imports contextlib, collections and importlib.util first (~9 ms
per call here); zipimport alone is frozen into the interpreter. -I -S: no site import (~5 ms)
and no user site or PYTHON* variables changing what runs.
"""
from __future__ import annotations

from plugin.delivery import handoff

# plugin.cni.rundir's rule for the run directory, as far as builtins can see it: an absolute
# path without . or .. components, every component a directory owned by root (-O: the
# caller is root) that is not a symbolic link. Mode bits are out of the builtins' reach:
# the helper, which a call is handed to only when it is live, checks them every second.
TRUSTED_RUN_DIR = r"""
t() {
  case $1 in /*) ;; *) return 1 ;; esac
  case $1/ in */./* | */../*) return 1 ;; esac
  u=$1
  v=
  while :; do
    [ -d "/$v" ] && [ ! -L "/$v" ] && [ -O "/$v" ] || return 1
    u=${u#/}
    [ -n "$u" ] || return 0
    v=$v${v:+/}${u%%/*}
    u=${u#"${u%%/*}"}
  done
}
"""

TEMPLATE = r"""#!/bin/sh
@HEADER@
# cnilab CNI plugin. This shell prologue hands the call to the resident helper when it is up
# (no Python starts: plugin/delivery/handoff.py), else runs the zip archive below (python3).
# One brace group: the shell parses it whole before running any of it, so a file read half
# written (a copy over it in progress) is a syntax error, not half a hand-off.
{
B="import sys
if sys.version_info < (3, 9):
    sys.stdout.write('{\"cniVersion\":\"1.0.0\",\"code\":5,'
                     '\"msg\":\"cnilab needs python3 3.9+\",\"details\":\"\"}\\n')
    sys.exit(1)
sys.path.insert(0, sys.argv[1])
try:
    from plugin.delivery.fastpath import main
except Exception as e:
    sys.stdout.write('{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"cnilab could not load'
                     ' its own code (replaced while it ran?); try again\",\"details\":\"'
                     + type(e).__name__ + '\"}\\n')
    sys.exit(1)
sys.exit(main(sys.argv[1:]))"
py() {
  for p in /usr/bin/python3 python3 /usr/local/bin/python3; do
    command -v "$p" >/dev/null 2>&1 && exec "$p" -I -S -c "$B" "$0" "$@"
  done
  echo '{"cniVersion":"1.0.0","code":5,"msg":"cnilab needs python3 (3.9 or newer) on the'\
' node","details":""}'
  exit 1
}
case ${CNILAB_RESIDENT-} in 0|[Ff][Aa][Ll][Ss][Ee]|[Nn][Oo]|[Oo][Ff][Ff]) py ;; esac
[ $# = 0 ] || py "$@"
@TRUSTED@
r=${CNILAB_RUN_DIR:-/run/cnilab}
t "$r" || py
d=
for f in "${r%/}"/resident-@BUILD@-*.pid; do
  [ -f "$f" ] && [ ! -L "$f" ] && [ -O "$f" ] || continue
  { read -r h <"$f"; } 2>/dev/null || continue
  case $h in '' | *[!0-9]*) continue ;; esac
  d=${f%.pid}.$h.d
  # This file's helper, alive, holding our request FIFO, and all of it root's.
  [ -d "$d" ] && [ ! -L "$d" ] && [ -O "$d" ] && [ -O "/proc/$h" ] &&
    [ "/proc/$h/fd/@FILE_FD@" -ef "$0" ] && [ "/proc/$h/fd/@LIVENESS_FD@" -ef "$d/q" ] && break
  d=
done
[ -n "$d" ] || py
set -C
trap '' PIPE
n=$(($$ % @SLOTS@))
i=1
# The slot is ours while we live: its lock stays open at fd @LOCK_FD@ (the helper frees it
# once we are gone, and not before: no later caller can read what is meant for us).
until { command exec @LOCK_FD@>"$d/$n.lock"; } 2>/dev/null; do
  [ $i -lt @SLOTS@ ] || py
  i=$((i + 1))
  n=$(((n + 1) % @SLOTS@))
done
echo $$ >&@LOCK_FD@
# Whatever else goes wrong, this wait ends: the helper's ticker (a process of its own) writes
# "T" on waiting callers' slots every second; this many ticks and we stop waiting.
k=${CNILAB_CALL_TIMEOUT:-60}
case $k in '' | *[!0-9]*) k=60 ;; esac
k=$((k + @MARGIN@))
s=
# The worker reads our stdin from fd @STDIN_FD@: fd 0 becomes the slot FIFO while we wait.
exec @STDIN_FD@<&0
{ printf '%-@PAD@s\n' "$n $$" 1<>"$d/q"; } 2>/dev/null || py
# Our lines on the slot FIFO until an answer; returns at end-of-file.
w() {
  while read -r a c l; do
    case $a in T) k=$((k - 1)); [ $k -gt 0 ] || x; continue ;; esac
    [ "$a" = $$ ] || continue
    case $c in
      S) s=1 ;;
      F) py <&3 ;;
      R) export CNILAB_STDIN_BYTES="$l"; py ;;
      X) g ;;
      O) printf '%s\n' "${l#* }"; exit "${l%% *}" ;;
      '' | *[!0-9]*) ;;
      *) exit "$c" ;;
    esac
  done
}
# The call is lost: run it here unless it had started.
g() {
  [ -n "$s" ] || py <&3
  echo '{"cniVersion":"1.0.0","code":11,"msg":"cnilab: the resident helper stopped during'\
' the call; try again","details":""}'
  exit 1
}
# Out of time: the same, unless a worker holds the call (it may still run it).
x() {
  [ -z "$s" ] && { echo $$ >"$d/$n.$$.taken"; } 2>/dev/null && py <&3
  echo '{"cniVersion":"1.0.0","code":11,"msg":"cnilab: no answer from the resident helper'\
' in time; try again","details":""}'
  exit 1
}
{
  exec 5>&- 2>&6 6>&-
  w
  { echo $$ >"$d/$n.$$.taken"; } 2>/dev/null && py <&3
  w
  g
} 6>&2 2>/dev/null 5<>"$d/$n" <"$d/$n"
py
}
"""


def render(build_id: str, header: str) -> bytes:
    """The prologue for `build_id`; `header` is vendor.header_line (a `#` line)."""
    text = (TEMPLATE.replace("@HEADER@", header)
            .replace("@TRUSTED@", TRUSTED_RUN_DIR.strip("\n"))
            .replace("@BUILD@", build_id)
            .replace("@LIVENESS_FD@", str(handoff.LIVENESS_FD))
            .replace("@FILE_FD@", str(handoff.FILE_FD))
            .replace("@SLOTS@", str(handoff.SLOTS))
            .replace("@MARGIN@", str(handoff.HANDOFF_MARGIN))
            .replace("@PAD@", str(handoff.RECORD_SIZE - 1))
            .replace("@STDIN_FD@", str(handoff.CALLER_STDIN_FD))
            .replace("@LOCK_FD@", str(handoff.LOCK_FD)))
    return text.encode("ascii")
