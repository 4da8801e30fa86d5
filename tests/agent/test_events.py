"""Entity events: the bridge never blocks ingest, retries failed batches, and (with a real broker) publishes every
confirmed entity of a session."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from agent.app import compose
from agent.events import EntityEventBridge, event_for
from agent.settings import load_settings
from testbed.backend import BackendServer
from testbed.epu import GeneratorConfig, SessionGenerator
from tests.conftest import import_optional


@dataclass
class Item:
    uuid: str
    kind: str = "gridsquare"
    version: int = 1
    payload: dict[str, Any] | None = None
    payload_hash: str = "h1"
    created: bool = False
    parent_uuid: str | None = "grid-1"


class FlakyPublisher:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def open(self) -> None:
        pass

    def close(self, timeout: float = 10.0) -> None:
        pass

    async def publish_many_async(self, messages: Any, *, confirm_timeout_s: float | None = None) -> list[str]:
        batch = list(messages)
        if self.failures:
            self.failures -= 1
            raise RuntimeError("broker away")
        self.sent.extend(batch)
        return [body["message_id"] for _, body in batch]


def test_event_shape_is_deterministic() -> None:
    key, body = event_for(Item("u1", payload={"gridsquare_id": "7"}))
    assert key == "gridsquare.created"
    assert body["message_id"] == "u1:created:h1"
    assert event_for(Item("u1", created=True))[0] == "gridsquare.updated"


async def test_failed_batch_is_retried_and_capacity_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    publisher = FlakyPublisher(failures=1)
    bridge = EntityEventBridge(publisher, capacity=5)
    real_sleep = asyncio.sleep
    monkeypatch.setattr(asyncio, "sleep", lambda s: real_sleep(0.01))
    await bridge.start()
    bridge.on_confirmed([Item(f"u{i}") for i in range(8)])  # 3 oldest dropped at once
    for _ in range(200):
        if len(publisher.sent) == 5:
            break
        await real_sleep(0.01)
    await bridge.stop()
    assert [body["uuid"] for _, body in publisher.sent] == ["u3", "u4", "u5", "u6", "u7"]
    assert bridge.snapshot()["dropped"] == 3
    assert bridge.snapshot()["failures"] == 1


@pytest.mark.amqp
@pytest.mark.integration
async def test_every_confirmed_entity_reaches_the_bus(amqp_url: str, tmp_path: Path) -> None:
    pika = import_optional("pika", "EM_AGENT_REQUIRE_AMQP", module_level=False)
    queue = f"em_agent.test.{tmp_path.name}"
    watch = tmp_path / "epu"
    watch.mkdir()
    gen = SessionGenerator(watch, GeneratorConfig(preset="small", seed=11))
    with BackendServer(tmp_path / "b.sqlite3", port=0) as backend:
        settings = load_settings(
            None,
            {
                "state_dir": str(tmp_path / "state"),
                "backend": {"url": backend.url},
                "ingest": {"watch_dir": str(watch)},
                "amqp": {"exchange": f"em_agent.test.{tmp_path.name}", "queue": queue},
            },
        )
        settings.amqp.url = SecretStr(amqp_url)
        comp = compose(settings)
        task = asyncio.create_task(comp.daemon.run())
        try:
            await asyncio.to_thread(gen.run)
            ok = await comp.ingest.wait_until_posted(timeout_s=60)
            assert ok
            await asyncio.sleep(1.0)
        finally:
            comp.daemon.request_stop("test")
            assert await task == 0
            await comp.close()
        expected = sum(gen.manifest.expected_counts(include_near_grid_bar=False).as_dict().values())

    def drain() -> list[dict[str, Any]]:
        conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
        try:
            channel = conn.channel()
            bodies = []
            while True:
                method, _, body = channel.basic_get(queue, auto_ack=True)
                if method is None:
                    break
                bodies.append(json.loads(body))
            with contextlib.suppress(Exception):
                channel.queue_delete(queue)
                channel.exchange_delete(f"em_agent.test.{tmp_path.name}")
            return bodies
        finally:
            conn.close()

    events = await asyncio.to_thread(drain)
    created = {e["uuid"] for e in events if e["event_type"].endswith(".created")}
    assert len(created) == expected
