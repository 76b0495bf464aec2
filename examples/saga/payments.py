"""The payments service: reserves and releases customers' credit (a saga participant)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from model import CreditReserved, ReleaseCredit, ReserveCredit
from worklog import WorkLog

from streamlib import StreamApp
from streamlib.saga import Participant, SagaStore, StepFailed


class PaymentsService:
    """Each customer has ``limit`` of credit; a reservation above what is left fails."""

    def __init__(
        self,
        config: Mapping[str, Any] | str | Path | None = None,
        *,
        store: SagaStore | None = None,
        destination: str = "payments",
        limit: float = 1000.0,
        work_log: Path | None = None,
    ) -> None:
        self.app = StreamApp("payments", config=config)
        self.participant = Participant(self.app, destination, store=store)
        self.work = WorkLog(work_log)
        self.reserved: dict[str, tuple[str, float]] = {}
        used: dict[str, float] = {}

        @self.participant.handler(ReserveCredit)
        async def reserve_credit(cmd: ReserveCredit) -> CreditReserved:
            if used.get(cmd.customer, 0.0) + cmd.amount > limit:
                raise StepFailed(f"credit limit of {cmd.customer} exceeded")
            used[cmd.customer] = used.get(cmd.customer, 0.0) + cmd.amount
            self.reserved[cmd.order_id] = (cmd.customer, cmd.amount)
            await self.work.record("reserve-credit", cmd.order_id)
            return CreditReserved(reservation=str(uuid.uuid4()))

        @self.participant.handler(ReleaseCredit)
        async def release_credit(cmd: ReleaseCredit) -> None:
            customer, amount = self.reserved.pop(cmd.order_id, (cmd.customer, 0.0))
            used[customer] = used.get(customer, 0.0) - amount
            await self.work.record("release-credit", cmd.order_id)


service = PaymentsService()
app = service.app
