"""Header names that saga commands and replies carry."""

from __future__ import annotations

SAGA_ID = "saga-id"
"""The saga instance a command or reply belongs to."""
SAGA_TYPE = "saga-type"
"""The saga definition's name."""
SAGA_STEP = "saga-step"
"""Name of the step the command runs or compensates."""
COMMAND = "saga-command"
"""Name of the command, which selects the participant's handler."""
COMMAND_ID = "saga-command-id"
"""Unique id of one command; its reply carries it back (correlation and de-duplication)."""
REPLY_TO = "saga-reply-to"
"""Destination the participant sends its reply to."""
OUTCOME = "saga-outcome"
"""``success`` or ``failure``, on replies."""

SUCCESS = "success"
FAILURE = "failure"
