"""The embedded stack: Temporal, PostgreSQL and Redis started from pip packages."""
