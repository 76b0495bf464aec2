"""Fault injection for the broker tests: a TCP proxy that cuts, delays and black-holes."""
