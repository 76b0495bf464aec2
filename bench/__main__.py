"""``python -m bench [kafka|rabbit] [options]``: throughput and latency benchmarks.

Without a suite name, every row of the table (Kafka send, consume, round trip, tracing and
metrics; RabbitMQ publish and consume) runs in one invocation, round-robin, and the medians
are printed with their ratios and py CPU per message (``bench.table``). ``kafka`` and
``rabbit`` run one suite with its own options (``--tracing``, ``--latency``, ``--profile``).
Each measures streamlib, the raw client and FastStream against the same warmed-up broker in
the same run. Not part of the tests.
"""

from __future__ import annotations

import asyncio
import importlib
import sys

from bench import kafka_bench, rabbit_bench
from bench.common import arguments
from bench.table import report, run_rounds

SUITES = {"kafka": "bench.kafka_bench", "rabbit": "bench.rabbit_bench"}
SUITES["kafka-batch"] = "bench.kafka_batch"


def table(argv: list[str]) -> int:
    parser = arguments("python -m bench")
    kafka_bench.add_arguments(parser)
    rabbit_bench.add_arguments(parser)
    args = parser.parse_args(argv)
    print(
        f"{args.messages:,} messages of ~200 bytes per run, {args.rounds} rounds round-robin, "
        f"medians; Kafka at {args.bootstrap}, RabbitMQ at {args.url}"
    )
    sections = [*kafka_bench.sections(args), *rabbit_bench.sections(args)]
    asyncio.run(run_rounds(sections, args.rounds))
    report(sections)
    kafka_bench.report_costs(sections)
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        return table(argv)
    if argv[0] not in SUITES:
        print(f"usage: python -m bench [{'|'.join(SUITES)}] [options]", file=sys.stderr)
        return 2
    return int(importlib.import_module(SUITES[argv[0]]).main(argv[1:]) or 0)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
