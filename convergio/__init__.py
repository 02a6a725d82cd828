"""Convergio: business processes as durable multi-agent workflows on Temporal and AutoGen."""

__version__ = "0.1.0"
