"""`python -m plugin.build`: kept for the scripts and docs that call it; the builder itself is
plugin.delivery.build."""
from __future__ import annotations

import sys

from plugin.delivery.build import main

if __name__ == "__main__":
    sys.exit(main())
