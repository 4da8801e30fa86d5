"""Benchmark: AmqpEventPublisher throughput with publisher confirms against a local RabbitMQ.

Every figure counts persistent JSON messages confirmed by the broker (published to a durable queue without
consumers, so the broker writes them to disk):

* ``publish()`` from one caller thread (each call waits for its own confirm: latency-bound);
* ``publish()`` from several concurrent caller threads (their messages share the pipelined window);
* ``publish_many()`` batches from one caller (the whole batch is in flight at once).

Prints one JSON line. Needs a broker on 127.0.0.1:5672 (``EM_AGENT_AMQP_URL`` overrides the URL).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable

import pika

from backend_client import AmqpEventPublisher, AmqpPublisherConfig


def _timed(url: str, work: Callable[[AmqpEventPublisher], int]) -> float:
    """Messages per second of ``work`` (returning its confirmed count) on a fresh publisher and queue."""
    queue = f"em-agent-bench-{uuid.uuid4().hex[:8]}"
    config = AmqpPublisherConfig(url=url, exchange="em_agent.bench", queue=queue)
    try:
        with AmqpEventPublisher(config) as publisher:
            if not publisher.wait_connected(10):
                raise SystemExit("broker not reachable")
            started = time.perf_counter()
            confirmed = work(publisher)
            elapsed = time.perf_counter() - started
    finally:
        connection = pika.BlockingConnection(pika.URLParameters(url))
        connection.channel().queue_delete(queue)
        connection.close()
    return confirmed / elapsed


def single_callers(count: int, callers: int) -> Callable[[AmqpEventPublisher], int]:
    """``count`` publish() calls spread over ``callers`` threads."""

    def work(publisher: AmqpEventPublisher) -> int:
        per_caller = count // callers

        def caller(offset: int) -> None:
            for n in range(per_caller):
                publisher.publish("micrograph.created", {"uuid": f"mic-{offset}-{n}", "n": n})

        threads = [threading.Thread(target=caller, args=(i,)) for i in range(callers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return per_caller * callers

    return work


def batches(count: int, batch: int) -> Callable[[AmqpEventPublisher], int]:
    """``count`` messages as publish_many() calls of ``batch`` messages each."""

    def work(publisher: AmqpEventPublisher) -> int:
        done = 0
        while done < count:
            size = min(batch, count - done)
            done += len(
                publisher.publish_many(
                    [("micrograph.created", {"uuid": f"mic-{done + n}", "n": done + n}) for n in range(size)]
                )
            )
        return done

    return work


def main() -> None:
    """Print ``{"benchmark": "amqp_publish", ...}``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=20_000, help="messages for publish_many and N callers")
    parser.add_argument("--single-count", type=int, default=1000, help="messages for the one-caller run")
    parser.add_argument("--callers", type=int, default=16)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    url = os.environ.get("EM_AGENT_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
    print(f"publish() from 1 caller: {args.single_count} messages...", file=sys.stderr)
    one = _timed(url, single_callers(args.single_count, 1))
    print(f"publish() from {args.callers} callers: {args.count} messages...", file=sys.stderr)
    many_callers = _timed(url, single_callers(args.count, args.callers))
    print(f"publish_many() batches of {args.batch}: {args.count} messages...", file=sys.stderr)
    batched = _timed(url, batches(args.count, args.batch))
    print(
        json.dumps(
            {
                "benchmark": "amqp_publish",
                "messages": args.count,
                "confirmed_msgs_per_s_publish_1_caller": round(one, 1),
                f"confirmed_msgs_per_s_publish_{args.callers}_callers": round(many_callers, 1),
                f"confirmed_msgs_per_s_publish_many_batch_{args.batch}": round(batched, 1),
                "max_in_flight": AmqpPublisherConfig().max_in_flight,
                "persistent": True,
                "confirms": True,
            }
        )
    )


if __name__ == "__main__":
    main()
