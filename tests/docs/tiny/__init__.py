"""The example of docs/writing-a-binder.md: a tiny binder and its conformance run."""
