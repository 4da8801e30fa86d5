"""``python -m testbed.backend``: run the testbed backend in the foreground (same options as the CLI)."""

from __future__ import annotations

import sys

from testbed.cli_backend import main

if __name__ == "__main__":
    sys.exit(main())
