"""Workflow definitions. Deterministic code only: no I/O, clocks or randomness here."""
