"""Entry script of the PyInstaller build: the same console script as `em-agent`."""

import sys

from agent.cli import main

if __name__ == "__main__":
    sys.exit(main())
