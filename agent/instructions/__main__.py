"""``python -m agent.instructions``: run the instruction service alone (see
:mod:`agent.instructions.runner`)."""

import sys

from agent.instructions.runner import main

sys.exit(main())
