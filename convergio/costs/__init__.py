"""Cost tracking: per-turn prices, the budget hierarchy enforced in Redis, and the Postgres ledger.

- :mod:`convergio.costs.pricing` prices a model turn from its token usage (``prices.yaml``,
  overridable) and carries the per-turn cost hook (:func:`~convergio.costs.pricing.subscribe`).
- :mod:`convergio.costs.budget` reserves a turn's estimated cost before it runs and commits its
  actual cost afterwards, atomically across workers (daily ⊃ workflow ⊃ turn-spike limits).
- :mod:`convergio.costs.ledger` records every turn's cost once and reports on them.
"""
