"""``python -m bench kafka|rabbit|all [options]``: throughput and latency benchmarks.

Each benchmark measures streamlib, the raw client and FastStream against the same warmed-up
broker in the same run and prints msgs/s and ratios. Not part of the tests.
"""

from __future__ import annotations

import importlib
import sys

SUITES = {"kafka": "bench.kafka_bench", "rabbit": "bench.rabbit_bench"}
SUITES["kafka-batch"] = "bench.kafka_batch"


def main(argv: list[str]) -> int:
    which = argv[0] if argv and not argv[0].startswith("-") else "all"
    rest = argv[1:] if argv and not argv[0].startswith("-") else argv
    if which not in (*SUITES, "all"):
        print(f"usage: python -m bench [{'|'.join(SUITES)}|all] [options]", file=sys.stderr)
        return 2
    status = 0
    for name, module in SUITES.items():
        if which in (name, "all"):
            status |= int(importlib.import_module(module).main(rest) or 0)
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
