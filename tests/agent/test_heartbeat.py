"""The one heartbeat wiring: ``stream_heartbeat`` beats for the stream's session only while it is connected,
and its period can change (0 stops it)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx

from agent.heartbeat import stream_heartbeat
from backend_client.async_client import AsyncSmartEMAPIClient
from backend_client.retry import RetryPolicy


@dataclass
class FakeStream:
    agent_id: str = "a1"
    session_id: str = "s1"
    connected: bool = False


async def test_stream_heartbeat_follows_the_stream_and_its_period() -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        return httpx.Response(200, json={"status": "success"})

    stream = FakeStream()
    async with AsyncSmartEMAPIClient(
        "http://b", transport=httpx.MockTransport(handler), retry=RetryPolicy.disabled()
    ) as api:
        beat = stream_heartbeat(api, stream, 0.02)
        await beat.start()
        await asyncio.sleep(0.1)
        assert paths == []  # the stream is down: no heartbeat
        stream.connected = True
        await asyncio.sleep(0.1)
        assert paths
        assert set(paths) == {"/agent/a1/session/s1/heartbeat"}
        await beat.set_interval(0)
        assert not beat.running
        count = len(paths)
        await asyncio.sleep(0.1)
        assert len(paths) == count
        await beat.stop()
