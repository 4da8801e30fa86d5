"""systemd unit installation (the notifier the running daemon uses is :mod:`agent.process.sd_notify`)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

UNIT_NAME = "em-agent.service"

ENV_TEMPLATE = """\
# Environment for em-agent.service (mode 600, owned by root). Secrets live here or in files, never in flags.
# Static bearer token, or OAuth2 client credentials:
#EM_AGENT_BACKEND__TOKEN=
#EM_AGENT_BACKEND__CLIENT_SECRET=
# Semphony control server API key (device.backend = "semphony"):
#EM_AGENT_DEVICE__API_KEY=
"""


def unit_text(executable: str, config_file: Path) -> str:
    """The packaged unit file with the executable and configuration paths filled in."""
    template = resources.files("agent.service").joinpath("em-agent.service.in").read_text(encoding="utf-8")
    return template.replace("@EXEC@", executable).replace("@CONFIG@", str(config_file))


def install_unit(
    *, executable: str, config_file: Path, unit_dir: Path, env_file: Path, overwrite: bool = False
) -> list[Path]:
    """Write the unit and an environment-file template; returns the paths written."""
    written: list[Path] = []
    unit_dir.mkdir(parents=True, exist_ok=True)
    unit_path = unit_dir / UNIT_NAME
    if unit_path.exists() and not overwrite:
        raise FileExistsError(f"{unit_path} exists; pass --force to overwrite")
    unit_path.write_text(unit_text(executable, config_file), encoding="utf-8")
    written.append(unit_path)
    if not env_file.exists():
        env_file.parent.mkdir(parents=True, exist_ok=True)
        env_file.write_text(ENV_TEMPLATE, encoding="utf-8")
        env_file.chmod(0o600)
        written.append(env_file)
    return written
