"""Observability: traces (:mod:`.tracing`), metrics (:mod:`.metrics`), structured logs (:mod:`.logging`)."""
