"""Dead-letter queues: what the ``streamlib dlq`` commands list, show, replay and purge.

The broker-neutral model and the SPI a binder implements are in ``letters``; the replay loop
(rate limit, in-flight window, removal after confirmation) in ``replay``; the commands in
``cli``.
"""
