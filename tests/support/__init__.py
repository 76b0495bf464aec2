"""Support shared by this repository's tests: the broker launcher (tools/brokers.py) glue."""
