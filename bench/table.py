"""The benchmark table: sections of contenders run round-robin, medians, ratios, py CPU.

A ``Section`` is one row of the table (``Kafka send, 1 partition``): contenders doing the same
work, one of them the baseline the others are divided by. Each contender is an async function
taking the section's fixture (a pre-filled topic, say) and returning the seconds its work took,
or, in a latency section, the milliseconds of each sample. Every round runs every contender of
every section once, so slow phases of a shared machine hit all of them alike; the median of
the rounds is reported, with the process CPU time of the run (setup included) per message.
"""

from __future__ import annotations

import importlib
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

Run = Callable[[Any, int], Awaitable[Any]]
"""A contender: ``(fixture, messages)`` -> seconds taken, or latency samples in ms."""


@dataclass
class Section:
    """One row of the table: ``count`` messages per run, after one warm-up run of ``warmup``.

    ``prepare`` makes the fixture the contenders share, once or (``fresh``) every round, and
    ``cleanup`` disposes of one; in a ``latency`` section contenders return samples in ms.
    """

    title: str
    count: int
    contenders: dict[str, Run]
    baseline: str
    warmup: int = 0
    prepare: Callable[[], Awaitable[Any]] | None = None
    cleanup: Callable[[Any], Awaitable[None]] | None = None
    fresh: bool = False
    latency: bool = False
    results: dict[str, list[tuple[Any, float]]] = field(default_factory=dict)
    _fixture: Any = None

    async def fixture(self, new_round: bool) -> Any:
        if self.prepare is None:
            return None
        if self._fixture is None or (self.fresh and new_round):
            await self.close()
            self._fixture = await self.prepare()
        return self._fixture

    async def close(self) -> None:
        if self._fixture is not None and self.cleanup is not None:
            await self.cleanup(self._fixture)
        self._fixture = None


async def run_rounds(sections: list[Section], rounds: int) -> None:
    """Warm every contender up, then run each ``rounds`` times, sections and contenders
    interleaved."""
    for section in sections:
        if section.warmup:
            fixture = await section.fixture(True)
            for run in section.contenders.values():
                await run(fixture, section.warmup)
            if section.fresh:
                await section.close()
    for done in range(rounds):
        for section in sections:
            new_round = True
            for name, run in section.contenders.items():
                fixture = await section.fixture(new_round)
                new_round = False
                cpu = time.process_time()
                value = await run(fixture, section.count)
                section.results.setdefault(name, []).append((value, time.process_time() - cpu))
                print(f"round {done + 1}/{rounds}: {section.title}: {name}", file=sys.stderr)
    for section in sections:
        await section.close()


def lazy(path: str) -> Callable[..., Awaitable[Any]]:
    """The async function at ``module:name``, imported on its first call: a suite's table can
    name a contender of a module that itself imports the suite (``bench.kafka_batch``)."""
    module, _, name = path.partition(":")

    async def call(*args: Any) -> Any:
        return await getattr(importlib.import_module(module), name)(*args)

    return call


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(sections: Iterable[Section]) -> None:
    """Print each section's contenders: median rate (or p50/p99), ratio to the baseline, and
    py CPU in microseconds per message."""
    for section in sections:
        print(f"\n{section.title} ({section.count:,} messages, baseline {section.baseline})")
        if section.latency:
            _report_latency(section)
            continue
        rates = {
            name: statistics.median(section.count / seconds for seconds, _ in runs)
            for name, runs in section.results.items()
        }
        base = rates.get(section.baseline)
        for name, runs in section.results.items():
            cpu = statistics.median(c for _, c in runs) / section.count * 1e6
            ratio = f"{rates[name] / base:5.2f}x" if base else "    -"
            spread = ", ".join(f"{section.count / s / 1000:.1f}k" for s, _ in runs)
            print(
                f"  {name:<34} {rates[name]:>9,.0f} msg/s  {ratio}  "
                f"py CPU {cpu:5.1f} us/msg  ({spread})"
            )


def _report_latency(section: Section) -> None:
    stats = {
        name: (
            statistics.median(_percentile(samples, 0.5) for samples, _ in runs),
            statistics.median(_percentile(samples, 0.99) for samples, _ in runs),
            statistics.median(c for _, c in runs) / section.count * 1e6,
        )
        for name, runs in section.results.items()
    }
    base = stats.get(section.baseline)
    for name, (p50, p99, cpu) in stats.items():
        delta = f"p99 {p99 - base[1]:+.3f} ms" if base and name != section.baseline else ""
        print(
            f"  {name:<34} p50 {p50:6.3f} ms  p99 {p99:6.3f} ms  py CPU {cpu:5.1f} us/msg  {delta}"
        )
