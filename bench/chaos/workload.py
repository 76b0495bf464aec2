"""What the chaos run sends and the rule, shared by the processors and the checker, that picks
the outputs the broker must reject."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Workload:
    """``messages`` inputs numbered 0..messages-1 over ``keys`` keys; every ``reject_every``-th
    output (by sequence number) is made to be refused by the broker (0: none)."""

    run_id: str
    messages: int
    keys: int = 64
    reject_every: int = 1000

    def key(self, seq: int) -> str:
        return f"k{seq % self.keys:03d}"

    def rejected(self, seq: int) -> bool:
        return self.reject_every > 0 and seq % self.reject_every == self.reject_every // 2

    def rejected_seqs(self) -> set[int]:
        return {seq for seq in range(self.messages) if self.rejected(seq)}

    @property
    def input(self) -> str:
        return f"chaos-in-{self.run_id}"

    @property
    def output(self) -> str:
        return f"chaos-out-{self.run_id}"

    @property
    def refused(self) -> str:
        """RabbitMQ: the exchange whose only queue refuses every message."""
        return f"chaos-refused-{self.run_id}"

    group = "relay"
