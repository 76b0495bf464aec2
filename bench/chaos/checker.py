"""Counts what a chaos run delivered against what it sent: the verdict printed per broker.

Every input ends in exactly one of: an output the reader saw, a dead letter, or still waiting
in the input (stuck). Anything else is lost. Outputs carry a per-send id, so a copy the broker
redelivered to the reader is not counted as a duplicate; two sends for one input are.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from .workload import Workload


@dataclass(slots=True)
class Arrival:
    """One output the reader saw, in arrival order."""

    seq: int
    key: str
    send_id: str
    at: float


@dataclass(slots=True)
class Fault:
    """A fault the driver caused, from ``start`` to ``end`` (monotonic seconds)."""

    kind: str
    start: float
    end: float
    detail: str = ""


@dataclass(slots=True)
class Observed:
    """Everything the run saw of one broker."""

    arrivals: list[Arrival] = field(default_factory=list)
    dead_letters: list[int] = field(default_factory=list)
    remaining: list[int] = field(default_factory=list)
    stuck_places: list[str] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)


@dataclass(slots=True)
class Verdict:
    broker: str
    sent: int
    outputs: int
    lost: list[int]
    duplicates: int
    resent_copies: int
    dead_lettered: int
    dead_letter_duplicates: int
    expected_dead: int
    unexpected_dead: list[int]
    missing_dead: list[int]
    rejected_with_output: list[int]
    out_of_order: int
    stuck: list[str]
    stuck_messages: int
    recovery: dict[str, float]
    longest_gap: float
    faults: Counter[str]

    @property
    def ok(self) -> bool:
        return (
            not self.lost
            and not self.stuck
            and not self.unexpected_dead
            and not self.missing_dead
            and not self.rejected_with_output
        )

    def lines(self) -> list[str]:
        def sample(seqs: list[int]) -> str:
            head = ", ".join(str(s) for s in sorted(seqs)[:10])
            return f" (seq {head}{', ...' if len(seqs) > 10 else ''})" if seqs else ""

        faults = ", ".join(f"{kind} {n}" for kind, n in sorted(self.faults.items())) or "none"
        recovery = ", ".join(f"{k} {v:.1f} s" for k, v in sorted(self.recovery.items()))
        worst = max(self.recovery.values(), default=0.0)
        return [
            f"{self.broker}: sent {self.sent}, outputs seen {self.outputs}; faults: {faults}",
            f"  lost                 {len(self.lost)}{sample(self.lost)}",
            f"  duplicates           {self.duplicates} outputs, "
            f"{self.dead_letter_duplicates} dead letters "
            f"(+{self.resent_copies} redelivered copies of one send, not counted)",
            f"  dead-lettered        {self.dead_lettered} "
            f"(made to fail: {self.expected_dead}; not made to fail: "
            f"{len(self.unexpected_dead)}{sample(self.unexpected_dead)}; made to fail but "
            f"not dead-lettered: {len(self.missing_dead)}{sample(self.missing_dead)})",
            *(
                [
                    f"  REJECTED BUT OUTPUT  {len(self.rejected_with_output)}"
                    f"{sample(self.rejected_with_output)}"
                ]
                if self.rejected_with_output
                else []
            ),
            f"  out of order per key {self.out_of_order} (first deliveries behind a later seq)",
            f"  stuck                {len(self.stuck)} ({self.stuck_messages} inputs left"
            f"{': ' + ', '.join(self.stuck) if self.stuck else ''})",
            f"  longest recovery     {worst:.1f} s ({recovery or 'no faults'}); "
            f"longest gap between outputs {self.longest_gap:.1f} s",
            f"  verdict              {'OK' if self.ok else 'FAILED'}",
        ]


def recovery_times(faults: list[Fault], arrivals: list[Arrival]) -> dict[str, float]:
    """Per fault kind, the longest time from a fault's start to the first output after its end."""
    times = sorted(a.at for a in arrivals)
    worst: dict[str, float] = {}
    index = 0
    for fault in sorted(faults, key=lambda f: f.end):
        while index < len(times) and times[index] <= fault.end:
            index += 1
        if index == len(times):
            continue  # nothing came after: the end of the run, not a recovery
        worst[fault.kind] = max(worst.get(fault.kind, 0.0), times[index] - fault.start)
    return worst


def longest_gap(arrivals: list[Arrival]) -> float:
    times = sorted(a.at for a in arrivals)
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def out_of_order(arrivals: list[Arrival]) -> int:
    """First deliveries of a key that arrive after a later sequence number of the same key."""
    highest: dict[str, int] = {}
    seen: set[int] = set()
    count = 0
    for arrival in arrivals:
        if arrival.seq in seen:
            continue
        seen.add(arrival.seq)
        top = highest.get(arrival.key, -1)
        if arrival.seq < top:
            count += 1
        else:
            highest[arrival.key] = arrival.seq
    return count


def judge(broker: str, workload: Workload, seen: Observed) -> Verdict:
    sends: dict[int, set[str]] = defaultdict(set)
    copies = 0
    for arrival in seen.arrivals:
        if arrival.send_id in sends[arrival.seq]:
            copies += 1
        sends[arrival.seq].add(arrival.send_id)
    dead = Counter(seen.dead_letters)
    remaining = set(seen.remaining)
    expected_dead = workload.rejected_seqs()
    lost = [
        seq
        for seq in range(workload.messages)
        if seq not in sends and seq not in dead and seq not in remaining
    ]
    return Verdict(
        broker=broker,
        sent=workload.messages,
        outputs=len(sends),
        lost=lost,
        duplicates=sum(len(ids) - 1 for ids in sends.values()),
        resent_copies=copies,
        dead_lettered=len(dead),
        dead_letter_duplicates=sum(n - 1 for n in dead.values()),
        expected_dead=len(expected_dead),
        unexpected_dead=sorted(set(dead) - expected_dead),
        missing_dead=sorted(expected_dead - set(dead) - remaining),
        rejected_with_output=sorted(expected_dead & set(sends)),
        out_of_order=out_of_order(seen.arrivals),
        stuck=seen.stuck_places,
        stuck_messages=len(remaining),
        recovery=recovery_times(seen.faults, seen.arrivals),
        longest_gap=longest_gap(seen.arrivals),
        faults=Counter(f.kind for f in seen.faults),
    )
