import streamlib.saga


def test_public_names_are_pinned() -> None:
    assert set(streamlib.saga.__all__) == {
        "DEFAULT_EVENTS_DESTINATION",
        "Backoff",
        "DedupeRecord",
        "HistoryEntry",
        "Local",
        "MemorySagaStore",
        "Orchestrator",
        "OutboxMessage",
        "Participant",
        "PostgresSagaStore",
        "Remote",
        "Saga",
        "SagaEvent",
        "SagaEventType",
        "SagaRecord",
        "SagaState",
        "SagaStore",
        "SqliteSagaStore",
        "StaleSagaError",
        "Step",
        "StepFailed",
        "StoreTransaction",
        "Wait",
    }
    for name in streamlib.saga.__all__:
        assert getattr(streamlib.saga, name) is not None
