"""The one typed settings object, built in the entry point and passed down explicitly.

Sources, in rising priority: defaults, a TOML file (``--config``), environment variables ``EM_AGENT_*`` (nested with
``__``, e.g. ``EM_AGENT_BACKEND__URL``), command-line flags. Secrets (backend token, OAuth client secret, device
API key) come only from the environment or from a file named in the configuration, never from a flag. Nothing here
reads the environment or the disk at import time.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import stat
import sys
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from agent.devices.openfibsem.config import OpenFibsemConfig
from agent.devices.simulator_config import SimulatorConfig
from agent.ingest.config import IngestConfig
from agent.instructions.config import ExecutorConfig
from agent.logging_setup import REDACTOR, LoggingConfig

log = logging.getLogger(__name__)

ENV_PREFIX = "EM_AGENT_"


class ConfigError(ValueError):
    """The configuration is invalid or unsafe; the message says which key and why."""


def platform_state_dir(environ: dict[str, str] | None = None) -> Path:
    """Default state folder: systemd ``StateDirectory``, ``%ProgramData%`` on Windows, else the user's state dir."""
    env = os.environ if environ is None else environ
    if env.get("STATE_DIRECTORY"):
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    if sys.platform == "win32":
        return Path(env.get("PROGRAMDATA", r"C:\ProgramData")) / "em-agent" / "state"
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "em-agent"


def platform_log_file(environ: dict[str, str] | None = None) -> Path | None:
    """Default log file: systemd ``LogsDirectory`` or ``%ProgramData%`` on Windows; None (stderr only) otherwise."""
    env = os.environ if environ is None else environ
    if env.get("LOGS_DIRECTORY"):
        return Path(env["LOGS_DIRECTORY"].split(":")[0]) / "em-agent.jsonl"
    if sys.platform == "win32":
        return Path(env.get("PROGRAMDATA", r"C:\ProgramData")) / "em-agent" / "logs" / "em-agent.jsonl"
    return None


def read_secret_file(path: Path) -> str:
    """Read a secret from a file, warning when others may read it (it should be chmod 600 / a restricted ACL)."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read secret file {path}: {exc.strerror}") from exc
    if sys.platform != "win32" and mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning(
            "secret file is readable by other users; run chmod 600 on it",
            extra={"path": str(path), "mode": oct(mode & 0o777)},
        )
    if not text:
        raise ConfigError(f"secret file {path} is empty")
    return text


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class BackendSettings(BaseModel):
    """``[backend]``: where the SmartEM-compatible backend is and how to authenticate."""

    url: str = Field("http://127.0.0.1:8000", description="Base URL of the backend API.")
    token: SecretStr | None = Field(None, description="Static bearer token (environment only).")
    token_file: Path | None = Field(None, description="File holding the static bearer token.")
    oauth_token_url: str | None = Field(None, description="OAuth2 token endpoint for client credentials.")
    client_id: str | None = Field(None, description="OAuth2 client id.")
    client_secret: SecretStr | None = Field(None, description="OAuth2 client secret (environment only).")
    client_secret_file: Path | None = Field(None, description="File holding the OAuth2 client secret.")
    connect_timeout_s: float = Field(5.0, gt=0, description="TCP/TLS connect timeout.")
    read_timeout_s: float = Field(30.0, gt=0, description="Read timeout for REST calls.")
    sse_read_timeout_s: float = Field(
        45.0,
        gt=15,
        description="Silence after which the SSE stream is considered dead (> SmartEM's 15 s pings).",
    )
    heartbeat_interval_s: float = Field(60.0, ge=0, description="Agent heartbeat period; 0 disables it.")
    verify_tls: bool = Field(True, description="Verify the backend's TLS certificate.")
    ca_bundle: Path | None = Field(None, description="Custom CA bundle (PEM) for the backend's certificate.")
    allow_insecure_http: bool = Field(False, description="Allow plain http:// to a non-loopback backend.")

    @model_validator(mode="after")
    def _check_transport(self) -> BackendSettings:
        scheme = urlsplit(self.url).scheme
        if scheme not in ("http", "https"):
            raise ValueError(f"backend.url must be http(s)://..., got {self.url!r}")
        if scheme == "http" and not self.allow_insecure_http and not _is_loopback(self.url):
            raise ValueError(
                "backend.url uses plain http:// to a non-loopback host; use https:// or set "
                "backend.allow_insecure_http = true if you really mean it"
            )
        return self

    def resolved_token(self) -> str | None:
        """The static token from the environment or its file."""
        if self.token is not None:
            return self.token.get_secret_value()
        return read_secret_file(self.token_file) if self.token_file else None

    def resolved_client_secret(self) -> str | None:
        """The OAuth2 client secret from the environment or its file."""
        if self.client_secret is not None:
            return self.client_secret.get_secret_value()
        return read_secret_file(self.client_secret_file) if self.client_secret_file else None


class DeviceSettings(BaseModel):
    """``[device]``: the microscope backend; ``none`` disables device-moving instructions."""

    backend: Literal["none", "simulator", "semphony", "openfibsem"] = Field(
        "none",
        description="Device backend: none, simulator (in process), semphony (a control server over HTTP) "
        "or openfibsem (a microscope through OpenFIBSEM; extra openfibsem).",
    )
    url: str | None = Field(None, description="Semphony control server URL (backend = 'semphony').")
    api_key: SecretStr | None = Field(None, description="Semphony API key (environment only).")
    api_key_file: Path | None = Field(None, description="File holding the Semphony API key.")
    device_slug: str = Field("sem-001", description="Semphony device slug.")
    run_name: str = Field("em-agent", description="Semphony run name (resumed if it exists).")
    simulator_seed: int = Field(0, description="Seed of the simulated specimen (backend = 'simulator').")
    simulator_time_factor: float = Field(
        1.0, ge=0, description="Scales simulated durations (pump, vent, stage travel); 0 = instantaneous."
    )
    simulator_stig_rotation_deg: float = Field(
        0.0,
        ge=-180.0,
        le=180.0,
        description="Simulated column's stigmator rotation, degrees (backend = 'simulator'); not 0 emulates an "
        "instrument the learned autofocus has never seen (see `em-agent autofocus validate`).",
    )
    openfibsem: OpenFibsemConfig = Field(
        default_factory=OpenFibsemConfig,
        description="The OpenFIBSEM backend (backend = 'openfibsem'): which microscope, and time limits.",
    )
    athena_url: str | None = Field(
        None, description="Athena decision-service URL; None declines reorder/skip."
    )
    athena_session_id: str | None = Field(
        None, description="Athena session id of the EPU session (required with athena_url)."
    )

    def simulator_config(self) -> SimulatorConfig:
        """The simulated SEM these settings describe (backend = 'simulator')."""
        return SimulatorConfig(
            seed=self.simulator_seed,
            time_factor=self.simulator_time_factor,
            stig_rotation_deg=self.simulator_stig_rotation_deg,
        )

    def resolved_api_key(self) -> str | None:
        """The Semphony API key from the environment or its file."""
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        return read_secret_file(self.api_key_file) if self.api_key_file else None


class AmqpSettings(BaseModel):
    """``[amqp]``: optional event publishing to a message bus."""

    url: SecretStr | None = Field(None, description="amqp://user:pass@host/vhost; None disables publishing.")
    exchange: str = Field("em_agent.events", description="Durable topic exchange; routing key = event type.")
    queue: str | None = Field(
        "em_agent.events", description="Durable queue bound to the exchange (keeps events until consumed)."
    )
    buffer: int = Field(
        10_000, ge=100, description="Events held while the broker is away; oldest dropped beyond."
    )


class Settings(BaseSettings):
    """Effective configuration of one agent process."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    agent_id: str = Field("em-agent", description="This agent's id, as registered in the backend.")
    session_id: str | None = Field(
        None, description="Agent session id; None runs ingest without instructions."
    )
    state_dir: Path = Field(default_factory=platform_state_dir, description="Durable state (SQLite, images).")
    backend: BackendSettings = Field(default_factory=BackendSettings)
    ingest: IngestConfig | None = Field(None, description="EPU ingest; needs at least ingest.watch_dir.")
    instructions: ExecutorConfig = Field(default_factory=ExecutorConfig)
    device: DeviceSettings = Field(default_factory=DeviceSettings)
    amqp: AmqpSettings = Field(default_factory=AmqpSettings)
    logging: LoggingConfig = Field(default_factory=lambda: LoggingConfig(file=platform_log_file()))

    _toml_file: Path | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = _CONFIG_FILE.get()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)


class _ConfigFileHolder:
    """Passes the TOML path into ``settings_customise_sources`` (a classmethod without arguments)."""

    def __init__(self) -> None:
        self._path: Path | None = None

    def get(self) -> Path | None:
        return self._path

    def set(self, path: Path | None) -> None:
        self._path = path


_CONFIG_FILE = _ConfigFileHolder()

SECRET_FIELDS = ("backend.token", "backend.client_secret", "device.api_key", "amqp.url")


def load_settings(config_file: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Build the settings from defaults, ``config_file``, the environment and ``overrides`` (flags).

    Raises :class:`ConfigError` with a readable message on any invalid value.
    """
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"configuration file not found: {config_file}")
    for key in _secret_flag_keys(overrides or {}):
        raise ConfigError(f"{key} is a secret: set it in the environment or a file, not on the command line")
    _CONFIG_FILE.set(config_file)
    try:
        settings = Settings(**(overrides or {}))
    except Exception as exc:  # pydantic ValidationError or TOML errors -> one readable message
        raise ConfigError(f"invalid configuration: {exc}") from exc
    finally:
        _CONFIG_FILE.set(None)
    for secret in (
        settings.backend.token,
        settings.backend.client_secret,
        settings.device.api_key,
        settings.amqp.url,
    ):
        if secret is not None:
            REDACTOR.add_secret(secret.get_secret_value())
    return settings


def _secret_flag_keys(overrides: dict[str, Any], prefix: str = "") -> list[str]:
    found: list[str] = []
    for key, value in overrides.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            found.extend(_secret_flag_keys(value, dotted + "."))
        elif dotted in SECRET_FIELDS and value is not None:
            found.append(dotted)
    return found


def masked_dump(settings: Settings) -> dict[str, Any]:
    """The effective configuration as JSON-able data with every secret masked (for ``config show``)."""
    data = settings.model_dump(mode="json")
    for dotted in SECRET_FIELDS:
        section, _, key = dotted.partition(".")
        if data.get(section, {}).get(key) is not None:
            data[section][key] = "***"
    return data
