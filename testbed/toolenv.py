"""Virtual environments for real counterparts that run on another Python.

The SmartEM packages (`smartem-decisions`, `smartem-epuplayer`) need Python >= 3.12 while em-agent stays on 3.11,
so tests and benchmarks run them as separate processes from a venv of their own. Each tool set below is a pinned
requirement list; :func:`ensure_tool_venv` builds its venv once under ``.venv-tools/<name>`` (next to the project's
``.venv``) and reuses it while the pins are unchanged. A file lock makes concurrent callers (two pytest processes,
a benchmark beside a test run) build it once.

The interpreter is found, in order, from ``EM_AGENT_PY312`` (a path to a python executable), ``pyenv prefix 3.12``,
then ``python3.12`` on ``PATH``.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "EPUPLAYER_REQUIREMENTS",
    "SMARTEM_REQUIREMENTS",
    "ToolUnavailableError",
    "ensure_tool_venv",
    "find_python312",
    "tool_venv_root",
]

# The real SmartEM backend, pinned: an unpinned install resolves a SQLAlchemy without greenlet and alembic fails.
# The API server imports mrcfile/tifffile/PIL at module level, hence the `images` extra; the `agent` extra brings
# the package's own reference agent (`smartem_agent`), which the benchmark runs beside em-agent.
SMARTEM_REQUIREMENTS: tuple[str, ...] = (
    "smartem-decisions[backend,images,agent]==0.1.3",
    "fastapi==0.136.3",
    "starlette==1.1.0",
    "sqlalchemy==2.0.44",
    "sqlmodel==0.0.27",
    "asyncpg==0.31.0",
    "sse-starlette==3.0.3",
    "uvicorn==0.38.0",
    "pydantic==2.12.5",
    "aio-pika==9.6.2",
    "PyJWT[crypto]==2.13.0",
    "greenlet==3.2.4",
    "lxml==6.1.3",
    "watchdog==6.0.0",
)

# The real EPU recorder/replayer used by the SmartEM developers to test agents.
EPUPLAYER_REQUIREMENTS: tuple[str, ...] = ("smartem-epuplayer==1.1.0",)

_REPO_ROOT = Path(__file__).resolve().parent.parent


class ToolUnavailableError(RuntimeError):
    """A tool venv could not be built (no Python 3.12, or the install failed); the message says which."""


def tool_venv_root() -> Path:
    """Folder holding the tool venvs (``EM_AGENT_TOOL_VENVS`` or ``<repo>/.venv-tools``)."""
    return Path(os.environ.get("EM_AGENT_TOOL_VENVS", _REPO_ROOT / ".venv-tools"))


def find_python312() -> Path | None:
    """Path of a Python 3.12 interpreter, or None when the machine has none."""
    explicit = os.environ.get("EM_AGENT_PY312")
    if explicit:
        return Path(explicit) if Path(explicit).exists() else None
    pyenv = shutil.which("pyenv")
    if pyenv:
        out = subprocess.run([pyenv, "prefix", "3.12"], capture_output=True, text=True, check=False)
        if out.returncode == 0 and out.stdout.strip():
            candidate = Path(out.stdout.strip().splitlines()[0]) / "bin" / "python3.12"
            if candidate.exists():
                return candidate
    found = shutil.which("python3.12")
    return Path(found) if found else None


def _bin_dir(venv: Path) -> Path:
    return venv / ("Scripts" if sys.platform == "win32" else "bin")


def ensure_tool_venv(name: str, requirements: Sequence[str], *, timeout_s: float = 1200.0) -> Path:
    """Build (once) and return the ``bin`` folder of the venv ``name`` holding ``requirements``.

    Raises :class:`ToolUnavailableError` when no Python 3.12 exists or pip fails; the pip output tail is in the
    message so a CI failure says why.
    """
    root = tool_venv_root()
    root.mkdir(parents=True, exist_ok=True)
    venv = root / name
    digest = hashlib.sha256("\n".join(requirements).encode()).hexdigest()[:16]
    stamp = venv / f".stamp-{digest}"
    with (root / f".{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists():
            return _bin_dir(venv)
        python = find_python312()
        if python is None:
            raise ToolUnavailableError("no Python 3.12 found (set EM_AGENT_PY312 or install it with pyenv)")
        if venv.exists():
            shutil.rmtree(venv)
        steps = [
            [str(python), "-m", "venv", str(venv)],
            [
                str(_bin_dir(venv) / "python"),
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                *requirements,
            ],
        ]
        for cmd in steps:
            try:
                run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
            except subprocess.TimeoutExpired as exc:
                raise ToolUnavailableError(f"{name}: {cmd[0]} timed out after {timeout_s:.0f} s") from exc
            if run.returncode != 0:
                tail = (run.stdout + run.stderr)[-2000:]
                raise ToolUnavailableError(
                    f"{name}: {' '.join(cmd[:4])} ... failed ({run.returncode}):\n{tail}"
                )
        stamp.touch()
        return _bin_dir(venv)
