"""A stop that hangs in a thread no bound reaches still ends the process, with the stacks on stderr."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from agent.process import stall

STUCK_DAEMON = textwrap.dedent(
    """
    import asyncio, threading
    from agent.daemon import Daemon, NamedService

    class Stuck:
        async def start(self):
            pass

        async def stop(self):
            # A device call that never returns: asyncio.run will join this worker thread forever.
            await asyncio.to_thread(threading.Event().wait)

    async def main():
        daemon = Daemon([NamedService("stuck", Stuck())], shutdown_timeout_s=0.5, stall_exit_s=2.0)
        asyncio.get_running_loop().call_later(0.2, daemon.request_stop)
        return await daemon.run()

    raise SystemExit(asyncio.run(main()))
    """
)


def test_a_stuck_stop_exits_with_the_thread_stacks() -> None:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", STUCK_DAEMON], capture_output=True, text=True, timeout=60, check=False
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 1, proc.stderr
    assert elapsed < 30
    assert "Timeout" in proc.stderr
    assert "in wait" in proc.stderr  # the blocked worker thread's frame is in the dump
    assert "agent.stop_timeout" in proc.stderr or "stuck" in proc.stderr


def test_disarm_cancels_the_exit() -> None:
    code = "from agent.process import stall; import time; stall.arm(0.5); stall.disarm(); time.sleep(1.0); print('alive')"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "alive"


def test_disarm_without_arm_is_harmless() -> None:
    stall.disarm()


def test_run_disarms_an_exit_armed_during_the_loop() -> None:
    code = (
        "import time\nfrom agent.process import stall\n"
        "async def main():\n    stall.arm(0.5)\n    return 3\n"
        "assert stall.run(main()) == 3\ntime.sleep(1.0)\nprint('alive')"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "alive"
