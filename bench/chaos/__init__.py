"""The chaos run (``python -m bench.chaos``, ``make chaos``): keyed messages through a group of
streamlib processor processes under random faults, then a count of what was lost, duplicated,
dead-lettered, reordered and left stuck; and a large backlog under a slow handler, watching the
consumer's memory. Runs only against a broker pair of its own, never the shared one."""
