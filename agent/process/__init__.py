"""Process utilities the daemon uses whatever runs it: the systemd notifier and the stall guard (a stop that
overruns its bound exits with every thread's stack).

They sit below the composition root so that entry points (``agent.service``) and the daemon share them without an
import cycle.
"""

from agent.process.sd_notify import SystemdNotifier

__all__ = ["SystemdNotifier"]
