"""Benchmark: AmqpEventPublisher throughput with publisher confirms against a local RabbitMQ.

Publishes N persistent JSON messages (each ``publish()`` returns after the broker's confirm) from one caller thread
and from several concurrent callers, and prints one JSON line. Needs a broker on 127.0.0.1:5672
(``EM_AGENT_AMQP_URL`` overrides the URL).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import uuid

from backend_client import AmqpEventPublisher, AmqpPublisherConfig


def run(url: str, count: int, callers: int) -> float:
    """Messages per second for ``count`` confirmed publishes spread over ``callers`` threads."""
    queue = f"em-agent-bench-{uuid.uuid4().hex[:8]}"
    config = AmqpPublisherConfig(url=url, exchange="em_agent.bench", queue=queue)
    with AmqpEventPublisher(config) as publisher:
        if not publisher.wait_connected(10):
            raise SystemExit("broker not reachable")
        per_caller = count // callers

        def work(offset: int) -> None:
            for n in range(per_caller):
                publisher.publish("micrograph.created", {"uuid": f"mic-{offset}-{n}", "n": n})

        threads = [threading.Thread(target=work, args=(i,)) for i in range(callers)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    connection.channel().queue_delete(queue)
    connection.close()
    return per_caller * callers / elapsed


def main() -> None:
    """Print ``{"benchmark": "amqp_publish", ...}``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--callers", type=int, default=4)
    args = parser.parse_args()
    url = os.environ.get("EM_AGENT_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
    print(f"publishing {args.count} messages with confirms...", file=sys.stderr)
    single = run(url, args.count, 1)
    concurrent = run(url, args.count, args.callers)
    print(
        json.dumps(
            {
                "benchmark": "amqp_publish",
                "messages": args.count,
                "confirmed_msgs_per_s_1_caller": round(single, 1),
                f"confirmed_msgs_per_s_{args.callers}_callers": round(concurrent, 1),
                "persistent": True,
                "confirms": True,
            }
        )
    )


if __name__ == "__main__":
    main()
