"""JSON log lines, redaction everywhere in a record, and bounded non-blocking log shipping."""

from __future__ import annotations

import io
import json
import logging
import threading
import time

import httpx
import pytest

from agent.logging_setup import (
    REDACTED,
    JsonFormatter,
    LoggingConfig,
    LogShipper,
    Redactor,
    configure_logging,
    record_to_dict,
)

TOKEN = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXBheWxvYWQ.sig-abcdef123456"


def _logger(name: str, redactor: Redactor) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(redactor))
    logger = logging.getLogger(name)
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream


def test_record_has_stable_keys_and_extra_fields() -> None:
    logger, stream = _logger("t.keys", Redactor())
    logger.info("agent.status", extra={"outbox_depth": 3, "orphans": {"micrograph": 2}})
    line = json.loads(stream.getvalue())
    assert list(line)[:4] == ["ts", "level", "logger", "event"]
    assert line["event"] == "agent.status"
    assert line["outbox_depth"] == 3
    assert line["orphans"] == {"micrograph": 2}


def test_token_never_appears_in_message_exception_or_header() -> None:
    redactor = Redactor()
    redactor.add_secret(TOKEN)
    logger, stream = _logger("t.redact", redactor)
    logger.warning("sending with Authorization: Bearer %s", TOKEN)
    logger.info("request", extra={"headers": {"Authorization": f"Bearer {TOKEN}", "Accept": "json"}})
    logger.info("nested", extra={"ctx": {"items": [f"token={TOKEN}"]}})
    try:
        raise RuntimeError(f"server said no to {TOKEN}")
    except RuntimeError:
        logger.exception("failed")
    request = httpx.Request("GET", "http://x", headers={"Authorization": f"Bearer {TOKEN}"})
    logger.info("httpx", extra={"request_headers": dict(request.headers)})
    out = stream.getvalue()
    assert TOKEN not in out
    assert "sig-abcdef123456" not in out
    assert out.count(REDACTED) >= 5
    for line in out.splitlines():
        json.loads(line)


def test_unregistered_bearer_and_secret_keys_are_masked() -> None:
    redactor = Redactor()
    rec = logging.LogRecord(
        "x", logging.INFO, "f", 1, "got Bearer abc.def.ghi from client_secret=s3cr3tvalue", None, None
    )
    rec.api_key = "k-123456789"
    data = record_to_dict(rec, redactor)
    assert "abc.def.ghi" not in json.dumps(data)
    assert "s3cr3tvalue" not in json.dumps(data)
    assert data["api_key"] == REDACTED


def test_console_output_is_ascii_and_flushed() -> None:
    stream = io.StringIO()
    handlers = configure_logging(LoggingConfig(level="INFO"), stream=stream)
    try:
        logging.getLogger("t.ascii").info("Å µm grid ✓")
        line = stream.getvalue().strip()
        assert line.isascii()
        assert json.loads(line)["event"] == "Å µm grid ✓"
    finally:
        for h in handlers:
            logging.getLogger().removeHandler(h)


def test_per_module_levels_and_rotation(tmp_path: pytest.TempPathFactory) -> None:
    path = tmp_path / "logs" / "agent.jsonl"  # type: ignore[operator]
    cfg = LoggingConfig(level="INFO", levels={"t.quiet": "ERROR"}, file=path, max_bytes=2048, backup_count=2)
    handlers = configure_logging(cfg, stream=io.StringIO())
    try:
        logging.getLogger("t.quiet").warning("hidden")
        for i in range(200):
            logging.getLogger("t.loud").info("line %d with some padding to fill the file", i)
    finally:
        for h in handlers:
            h.close()
            logging.getLogger().removeHandler(h)
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["agent.jsonl", "agent.jsonl.1", "agent.jsonl.2"]
    assert "hidden" not in path.read_text()


def test_shipper_drops_oldest_when_backend_unreachable_and_never_blocks() -> None:
    calls: list[int] = []

    def ship(batch: list[dict[str, object]]) -> None:
        calls.append(len(batch))
        # An unreachable backend: the HTTP client would log this error while shipping.
        logging.getLogger("t.ship.httpclient").error("connection refused")
        raise httpx.ConnectError("refused")

    shipper = LogShipper(ship, capacity=50, batch_size=20, interval_s=0.05)
    logger = logging.getLogger("t.ship")
    logger.addHandler(shipper)
    logging.getLogger("t.ship.httpclient").addHandler(shipper)
    logger.setLevel(logging.INFO)
    try:
        start = time.perf_counter()
        for i in range(5000):
            logger.info("record %d", i)
        elapsed = time.perf_counter() - start
        time.sleep(0.3)
    finally:
        logger.removeHandler(shipper)
        logging.getLogger("t.ship.httpclient").removeHandler(shipper)
        shipper.close()
    assert elapsed < 5.0  # emit never waits for the network
    assert calls, "the shipper tried to send"
    stats = shipper.stats()
    assert stats["dropped"] >= 5000 - 50 - sum(calls)
    assert stats["failures"] >= 1
    assert stats["shipped"] == 0
    assert all(n <= 20 for n in calls)


def test_shipper_delivers_batches_with_smartem_shape() -> None:
    got: list[dict[str, object]] = []
    done = threading.Event()

    def ship(batch: list[dict[str, object]]) -> None:
        got.extend(batch)
        if len(got) >= 3:
            done.set()

    shipper = LogShipper(ship, capacity=100, batch_size=10, interval_s=0.05)
    logger = logging.getLogger("t.ship2")
    logger.addHandler(shipper)
    logger.setLevel(logging.DEBUG)
    try:
        logger.debug("not shipped")
        for i in range(3):
            logger.info("shipped %d", i)
        assert done.wait(5)
    finally:
        logger.removeHandler(shipper)
        shipper.close()
    assert [set(item) for item in got] == [{"timestamp", "level", "logger_name", "message"}] * 3
    assert json.loads(str(got[0]["message"]))["event"] == "shipped 0"


def test_event_field_becomes_the_event_and_message_is_kept() -> None:
    rec = logging.LogRecord("x", logging.INFO, "f", 1, "instruction stream connected", None, None)
    rec.event = "sse.connected"
    rec.level = "shadow"
    data = record_to_dict(rec, Redactor())
    assert data["event"] == "sse.connected"
    assert data["message"] == "instruction stream connected"
    assert data["level"] == "INFO"
    assert data["field_level"] == "shadow"
