"""`python -m plugin`: the CNI entry point a runtime executes."""
from __future__ import annotations

import os
import sys


def main() -> int:
    from plugin.cni.skel import dispatch

    outcome = dispatch(os.environ, sys.stdin.buffer.read())
    sys.stdout.write(outcome.stdout)
    sys.stdout.flush()
    if outcome.stderr:
        sys.stderr.write(outcome.stderr)
    return outcome.exit_code


if __name__ == "__main__":
    sys.exit(main())
