"""The rabbit consumer's ack bookkeeping against a model of the broker's unacked deliveries.

The oracle is what RabbitMQ does with each frame: a channel holds its unsettled tags; an ack
or reject of a tag it does not hold closes the channel (406), a multiple-ack settles every
held tag up to it. Random interleavings of deliver / finish / channel lost and reopened /
flush check that no frame settles a delivery that was not finished that way, none goes to
another channel, and every finished delivery is settled by the next flush.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st
from streamlib_rabbit.acks import AckLedger, Action, Settle


@dataclass(eq=False)
class Channel:
    """One channel as the broker sees it."""

    number: int
    next_tag: int = 1
    unacked: set[int] = field(default_factory=set)
    open: bool = True


@dataclass
class Delivery:
    channel: Channel
    tag: int
    outcome: Action | None = None


@dataclass
class Broker:
    """The oracle: applies frames as RabbitMQ does and records what each delivery got."""

    settled: dict[tuple[int, int], Action] = field(default_factory=dict)

    def apply(self, frame: Settle[Channel], finished: dict[tuple[int, int], Action]) -> None:
        ch = frame.channel
        assert ch.open, f"frame {frame} on a lost channel"
        assert frame.tag in ch.unacked, f"unknown delivery tag {frame.tag}: the broker closes"
        covered = sorted(t for t in ch.unacked if t <= frame.tag) if frame.multiple else [frame.tag]
        assert not frame.multiple or frame.action is Action.ACK
        for tag in covered:
            key = (ch.number, tag)
            assert finished.get(key) is frame.action, (
                f"{frame.action.value} covers tag {tag} of channel {ch.number}, "
                f"which was {finished.get(key)}"
            )
            ch.unacked.discard(tag)
            self.settled[key] = frame.action


ops = st.lists(
    st.one_of(
        st.tuples(st.just("deliver"), st.integers(1, 5)),
        st.tuples(
            st.just("finish"),
            st.integers(0, 1_000),
            st.sampled_from([Action.ACK, Action.ACK, Action.ACK, Action.REJECT, Action.REQUEUE]),
        ),
        st.tuples(st.just("reopen")),
        st.tuples(st.just("flush")),
    ),
    max_size=80,
)


@settings(max_examples=1000, deadline=None)
@given(ops)
def test_frames_settle_only_finished_deliveries_of_their_own_channel(
    steps: list[tuple[object, ...]],
) -> None:
    ledger: AckLedger[Channel] = AckLedger()
    broker = Broker()
    channel = Channel(1)
    running: list[Delivery] = []  # handed to handlers, not finished yet (any channel)
    finished: dict[tuple[int, int], Action] = {}

    def flush() -> None:
        for frame in ledger.flush():
            broker.apply(frame, finished)
        assert ledger.finished == 0
        # Everything finished on the live channel is settled now, as it was decided.
        for (number, tag), action in finished.items():
            if number == channel.number:
                assert broker.settled.get((number, tag)) is action

    for step in steps:
        match step:
            case ("deliver", int(count)):
                for _ in range(count):
                    tag = channel.next_tag
                    channel.next_tag += 1
                    channel.unacked.add(tag)
                    ledger.deliver(channel, tag)
                    running.append(Delivery(channel, tag))
            case ("finish", int(pick), Action() as action) if running:
                delivery = running.pop(pick % len(running))
                live = delivery.channel.open
                assert ledger.finish(delivery.channel, delivery.tag, action) is live
                if live:
                    finished[(delivery.channel.number, delivery.tag)] = action
            case ("reopen",):
                # The connection dropped: the broker requeues what the channel held and a
                # new channel starts its tags at 1; handlers of old deliveries still run.
                channel.open = False
                channel.unacked.clear()
                ledger.lost(channel)
                channel = Channel(channel.number + 1)
            case ("flush",):
                flush()
    flush()
    # Unfinished deliveries of the live channel are still unsettled on the broker.
    for delivery in running:
        if delivery.channel is channel:
            assert delivery.tag in channel.unacked


def test_a_multiple_ack_stops_at_the_first_unfinished_delivery() -> None:
    ledger: AckLedger[str] = AckLedger()
    for tag in (1, 2, 3, 4):
        ledger.deliver("ch", tag)
    for tag in (1, 2, 4):
        ledger.finish("ch", tag, Action.ACK)
    assert ledger.flush() == [
        Settle("ch", 2, Action.ACK, multiple=True),
        Settle("ch", 4, Action.ACK),
    ]


def test_an_old_channel_finish_is_not_acked_on_the_new_channel() -> None:
    ledger: AckLedger[object] = AckLedger()
    old, new = object(), object()
    ledger.deliver(old, 7)
    ledger.lost(old)
    ledger.deliver(new, 1)
    assert ledger.finish(old, 7, Action.ACK) is False
    assert ledger.flush() == []


def test_reset_forgets_every_channel() -> None:
    ledger: AckLedger[str] = AckLedger()
    ledger.deliver("a", 1)
    ledger.finish("a", 1, Action.ACK)
    ledger.deliver("b", 1)
    ledger.reset()
    assert ledger.finished == 0
    assert ledger.finish("b", 1, Action.ACK) is False
    assert ledger.flush() == []
