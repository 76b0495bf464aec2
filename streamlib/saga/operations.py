"""Operator actions on sagas that need attention, and a saga's Mermaid diagram.

``resolve`` moves a ``needs_attention`` saga back into work: ``retry`` runs the failing step
(or compensation) again, ``compensate`` compensates the steps done so far, ``skip`` treats the
failing step (or compensation) as done. The saga is left unowned with nothing to wait for, so
the timer of any running orchestrator claims it and goes on. The write is fenced like any other:
it fails if an orchestrator changed the saga meanwhile.
"""

from __future__ import annotations

from typing import Any, Literal

from .definition import Remote, Saga
from .store import HistoryEntry, SagaRecord, SagaState, SagaStore, Wait

Action = Literal["retry", "compensate", "skip"]


def _phase(history: list[HistoryEntry]) -> SagaState:
    """Whether the saga was running or compensating when it gave up (the detail of its last
    ``needs attention`` entry says which had failed)."""
    for entry in reversed(history):
        if entry.event == "needs attention":
            failed_compensation = (entry.detail or "").startswith("compensation failed")
            return SagaState.COMPENSATING if failed_compensation else SagaState.RUNNING
    return SagaState.RUNNING


async def resolve(store: SagaStore, saga_id: str, action: Action) -> SagaRecord:
    """Apply ``action`` to the ``needs_attention`` saga ``saga_id``; the updated record."""
    rec = await store.get(saga_id)
    if rec is None:
        raise LookupError(f"no saga {saga_id}")
    if rec.state is not SagaState.NEEDS_ATTENTION:
        raise ValueError(f"saga {saga_id} is {rec.state.value}, not needs_attention")
    phase = _phase(await store.history(saga_id))
    step = rec.step
    if action == "retry":
        state = phase
    elif action == "compensate":
        state = SagaState.COMPENSATING
        if phase is SagaState.RUNNING:
            step -= 1  # the failing step did not happen
    else:
        state = phase
        step += 1 if phase is SagaState.RUNNING else -1
    updated = rec.evolve(
        state=state,
        step=step,
        wait=Wait.RUN,
        command_id=None,
        deadline=None,
        attempt=0,
        owner=None,
    )
    await store.update(updated, HistoryEntry(saga_id, f"operator {action}", None, phase.value))
    return updated


def mermaid(saga: Saga[Any]) -> str:
    """A Mermaid flowchart of ``saga``: its steps in order, each step's failure path into the
    compensations of the steps before it, in reverse order."""
    lines = ["flowchart TD", f'    start(["{saga.name}"])']
    previous = "start"
    for n, step in enumerate(saga.steps):
        action = step.action
        where = f"command to {action.destination}" if isinstance(action, Remote) else "local"
        retry = ", retried" if step.retriable else ""
        lines.append(f'    s{n}["{step.name}<br/><small>{where}{retry}</small>"]')
        lines.append(f"    {previous} --> s{n}")
        previous = f"s{n}"
    lines.append('    completed(["completed"])')
    lines.append(f"    {previous} --> completed")
    lines.append('    compensated(["compensated"])')
    for n, step in enumerate(saga.steps):
        if step.retriable:
            continue
        # A step that fails is not undone, unless it timed out (it may have happened).
        target = _compensation_from(saga, n - 1)
        lines.append(f"    s{n} -. fails .-> {target}")
        if step.compensation is not None:
            comp = step.compensation
            where = f"command to {comp.destination}" if isinstance(comp, Remote) else "local"
            lines.append(f'    c{n}["undo {step.name}<br/><small>{where}</small>"]')
            lines.append(f"    c{n} --> {_compensation_from(saga, n - 1)}")
    return "\n".join(lines)


def _compensation_from(saga: Saga[Any], index: int) -> str:
    """The first compensation run when steps ``0..index`` are to be undone."""
    while index >= 0 and saga.steps[index].compensation is None:
        index -= 1
    return f"c{index}" if index >= 0 else "compensated"
