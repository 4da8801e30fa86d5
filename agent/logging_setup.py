"""Logs are the monitoring interface: one JSON object per line, redacted, rotated, optionally shipped.

Every record becomes ``{"ts", "level", "logger", "event", ...fields}``; ``fields`` are whatever the caller passed as
``extra=``. Redaction runs on the final dictionary, so a token can hide in the message, an exception text, a header
dict or a nested field and still never reach the output. Console output is ASCII-only JSON (``ensure_ascii``), which
cannot crash on a non-UTF-8 Windows code page, and every record is flushed at once (never held in a buffer).
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import re
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from pydantic import BaseModel, Field

REDACTED = "***"

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is emitted as a field.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
    | {"message", "asctime", "taskName"}
)
_SECRET_KEY = re.compile(r"(token|secret|password|passwd|authorization|api[_-]?key|credential|cookie)", re.I)
_SECRET_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9\-._~+/]+=*"),
    re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)[^'\",}\s]+(\s+[^'\",}\s]+)?"),
    re.compile(
        r"(?i)((?:access_token|refresh_token|client_secret|api_key|password|token)['\"]?\s*[:=]\s*['\"]?)[^'\"&,}\s]+"
    ),
)


class Redactor:
    """Removes secrets from log output: known secret values, credential-looking patterns and secret-named keys."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()

    def add_secret(self, value: str | None) -> None:
        """Register a secret value (token, client secret) so it is masked wherever it appears."""
        # Very short values would mask innocent text; real secrets are long.
        if value and len(value) >= 6:
            with self._lock:
                self._values.add(value)

    def text(self, value: str) -> str:
        """Mask secrets inside one string."""
        for secret in self._values:
            if secret in value:
                value = value.replace(secret, REDACTED)
        for pattern in _SECRET_PATTERNS:
            value = pattern.sub(lambda m: m.group(1) + REDACTED, value)
        return value

    def value(self, value: Any, key: str | None = None) -> Any:
        """Mask secrets in any JSON-like value; values under secret-named keys are masked whole."""
        if key is not None and _SECRET_KEY.search(key) and value not in (None, "", REDACTED):
            return REDACTED
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {str(k): self.value(v, str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.value(v) for v in value]
        if isinstance(value, int | float | bool) or value is None:
            return value
        return self.text(repr(value))


REDACTOR = Redactor()
"""Process-wide redactor: the entry point registers configured secrets here."""


def record_to_dict(record: logging.LogRecord, redactor: Redactor = REDACTOR) -> dict[str, Any]:
    """Turn a record into the stable JSON shape, redacted."""
    out: dict[str, Any] = {
        "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname,
        "logger": record.name,
        "event": record.getMessage(),
    }
    for key, val in record.__dict__.items():
        if key in _STANDARD_ATTRS or key.startswith("_"):
            continue
        if key == "event":
            # A structured event name given as a field wins; the human message is kept beside it.
            out["message"], out["event"] = out["event"], val
        elif key in out:
            out[f"field_{key}"] = val
        else:
            out[key] = val
    if record.exc_info and record.exc_info[0] is not None:
        out["exc_type"] = record.exc_info[0].__name__
        out["exc"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
    return {
        k: redactor.value(v, k if k not in ("event", "logger", "level", "ts") else None)
        for k, v in out.items()
    }


class JsonFormatter(logging.Formatter):
    """One redacted JSON object per line; ASCII-only so any console code page can print it."""

    def __init__(self, redactor: Redactor = REDACTOR) -> None:
        super().__init__()
        self._redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(record_to_dict(record, self._redactor), ensure_ascii=True, default=str)


class FlushingStreamHandler(logging.StreamHandler[TextIO]):
    """A stream handler that never crashes on encoding and flushes every record (service consoles buffer)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = self.format(record)
            stream = self.stream
            try:
                stream.write(msg + "\n")
            except UnicodeEncodeError:
                stream.write(msg.encode("ascii", "backslashreplace").decode("ascii") + "\n")
            stream.flush()
        except Exception:  # logging must never take the agent down
            self.handleError(record)


class LoggingConfig(BaseModel):
    """Logging settings (section ``[logging]`` of the configuration file)."""

    level: str = Field("INFO", description="Root level: DEBUG, INFO, WARNING, ERROR.")
    levels: dict[str, str] = Field(
        default_factory=dict,
        description="Per-logger levels, e.g. {'httpx': 'WARNING', 'agent.ingest': 'DEBUG'}.",
    )
    file: Path | None = Field(None, description="JSON log file (size-rotated); None = stderr only.")
    max_bytes: int = Field(20 * 1024 * 1024, ge=1024, description="Rotate the log file at this size.")
    backup_count: int = Field(10, ge=0, description="Rotated files kept.")
    ship: bool = Field(False, description="Ship INFO+ records to the backend's agent log endpoint.")
    ship_buffer: int = Field(
        2000, ge=10, description="Records held for shipping; the oldest are dropped beyond."
    )
    ship_interval_s: float = Field(5.0, gt=0, description="Seconds between shipping batches.")
    status_interval_s: float = Field(60.0, gt=0, description="Seconds between periodic agent.status lines.")


def configure_logging(
    config: LoggingConfig, *, stream: TextIO | None = None, redactor: Redactor = REDACTOR
) -> list[logging.Handler]:
    """Install the JSON handlers on the root logger (replacing earlier ones) and return them."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_em_agent", False):
            root.removeHandler(handler)
            handler.close()
    formatter = JsonFormatter(redactor)
    handlers: list[logging.Handler] = []
    console = FlushingStreamHandler(stream if stream is not None else sys.stderr)
    handlers.append(console)
    if config.file is not None:
        config.file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(
            logging.handlers.RotatingFileHandler(
                config.file, maxBytes=config.max_bytes, backupCount=config.backup_count, encoding="utf-8"
            )
        )
    for handler in handlers:
        handler.setFormatter(formatter)
        handler._em_agent = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(config.level.upper())
    # Chatty libraries stay at WARNING unless asked otherwise; httpx logs every request at INFO.
    for name in ("httpx", "httpcore", "watchdog", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # pika logs every refused reconnect at ERROR; the publisher reports its own failures once, with context.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    for name, level in config.levels.items():
        logging.getLogger(name).setLevel(level.upper())
    return handlers


ShipFunction = Callable[[list[dict[str, Any]]], None]


class LogShipper(logging.Handler):
    """Ships INFO+ records to the backend, bounded and never blocking the code that logs.

    ``emit`` only appends to a bounded buffer (dropping the oldest record and counting it when full); a daemon
    thread sends batches with ``ship``. Records produced while shipping (for example by the HTTP client) are not
    shipped again, which removes the re-entrancy that deadlocked the reference agent's handler.
    """

    def __init__(
        self,
        ship: ShipFunction,
        *,
        capacity: int = 2000,
        batch_size: int = 500,
        interval_s: float = 5.0,
        redactor: Redactor = REDACTOR,
    ) -> None:
        super().__init__(level=logging.INFO)
        self._ship = ship
        self._capacity = capacity
        self._batch_size = batch_size
        self._interval_s = interval_s
        self._redactor = redactor
        self._buffer: list[dict[str, Any]] = []
        self._cond = threading.Condition(threading.Lock())
        self._local = threading.local()
        self._stopping = False
        self.dropped = 0
        self.shipped = 0
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name="em-agent-log-shipper", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self._local, "shipping", False) or self._stopping:
            return
        try:
            entry = record_to_dict(record, self._redactor)
        except Exception:  # a record that cannot be rendered is not worth crashing for
            return
        item = {
            "timestamp": entry["ts"],
            "level": entry["level"],
            "logger_name": entry["logger"],
            "message": json.dumps(entry, ensure_ascii=True, default=str),
        }
        # acquire with a timeout: emit must never block the caller for long, even if the lock is contended.
        if not self._cond.acquire(timeout=0.05):
            self.dropped += 1
            return
        try:
            if len(self._buffer) >= self._capacity:
                del self._buffer[0]
                self.dropped += 1
            self._buffer.append(item)
            if len(self._buffer) >= self._batch_size:
                self._cond.notify()
        finally:
            self._cond.release()

    def _take(self) -> list[dict[str, Any]]:
        batch = self._buffer[: self._batch_size]
        del self._buffer[: len(batch)]
        return batch

    def _send(self, batch: Iterable[dict[str, Any]]) -> None:
        items = list(batch)
        if not items:
            return
        self._local.shipping = True
        try:
            self._ship(items)
            self.shipped += len(items)
        except Exception:
            # Unreachable backend: the batch is lost (bounded memory matters more than old log lines) and counted.
            self.failures += 1
            self.dropped += len(items)
        finally:
            self._local.shipping = False

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._stopping:
                    self._cond.wait(self._interval_s)
                batch = self._take()
                stopping = self._stopping
            self._send(batch)
            if stopping:
                with self._cond:
                    rest = self._take()
                self._send(rest)
                return

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread after one last bounded flush."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)
        super().close()

    def stats(self) -> dict[str, int]:
        """Counters for the status line."""
        return {"shipped": self.shipped, "dropped": self.dropped, "failures": self.failures}
