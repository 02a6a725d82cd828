"""Meter one agent turn: reserve its estimated cost before the model call, commit it after.

Used by the agent-turn activity, which writes the ledger row (PostgreSQL) itself, together with
the turn's record. Redis holds the live budget (atomic across workers), by attempt: see
:func:`~convergio.costs.budget.reservation_id`.
"""

from __future__ import annotations

from decimal import Decimal

from convergio.contracts import AgentTurnInput
from convergio.costs.budget import CommitResult, RedisBudget, ReservationResult, reservation_id
from convergio.costs.pricing import PriceTable, TurnCost

# What we reserve for the answer before we know its length.
ESTIMATED_COMPLETION_TOKENS = 1000
# A reservation outlives the longest turn (the step timeout is 5 minutes by default).
RESERVATION_TTL_S = 900
# A retry takes over the holds of the attempts before it, the latest this many (by then the
# older holds have expired on their own).
MAX_REPLACED = 20


class BudgetBusy(RuntimeError):
    """Other turns hold the rest of the budget right now; Temporal retries after a back-off."""


class TurnMeter:
    def __init__(self, budget: RedisBudget, prices: PriceTable) -> None:
        self._budget = budget
        self._prices = prices

    async def reserve(
        self, turn: AgentTurnInput, model: str, prompt_tokens: int, *, attempt: int, longest_turn_s: float = 0
    ) -> ReservationResult | None:
        """None when the turn is not metered or a person approved going over the limit. The hold
        lasts RESERVATION_TTL_S, or longer than ``longest_turn_s`` (the activity's timeout): a
        hold that expired while its turn still ran would let other turns spend the same money.
        ``attempt``: the activity's attempt; each one holds (and commits) its own cost, and takes
        over the holds of the attempts before it."""
        if turn.budget is None or turn.budget.approved_overrun:
            return None
        estimate = self._prices.estimate_turn_cost(model, prompt_tokens, ESTIMATED_COMPLETION_TOKENS)
        result = await self._budget.reserve(
            _turn_reservation(turn, attempt),
            turn.request.tenant,
            turn.workflow_id,
            turn.budget.day,
            estimate,
            turn.budget.limits,
            ttl_s=max(RESERVATION_TTL_S, longest_turn_s + 60),
            workflow_spent_usd=Decimal(repr(turn.run_cost_usd)),
            replaces=[_turn_reservation(turn, n) for n in range(max(1, attempt - MAX_REPLACED), attempt)],
        )
        if not result.granted and result.retryable:
            raise BudgetBusy(f"budget busy ({result.reason}): other turns hold the rest; retrying")
        return result

    def entry(self, turn: AgentTurnInput, model: str, prompt_tokens: int, completion_tokens: int) -> TurnCost:
        """The turn's ledger entry, priced (no I/O)."""
        return TurnCost(
            workflow_id=turn.workflow_id,
            step_id=turn.step_id,
            turn=turn.turn,
            tenant=turn.request.tenant,
            template=turn.budget.template if turn.budget else "",
            agent=turn.request.agent.name,
            model=model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=self._prices.cost_usd(model, prompt_tokens, completion_tokens),
        )

    async def commit_entry(
        self, turn: AgentTurnInput, entry: TurnCost, *, attempt: int
    ) -> CommitResult | None:
        """Count the entry's cost in the live budget, in place of ``attempt``'s hold; a second
        commit of the same attempt adds nothing. None when the turn is not metered. The caller
        writes the entry to the ledger (e.g. with :func:`ledger.record_on`)."""
        if turn.budget is None:
            return None
        reservation = _turn_reservation(turn, attempt)
        tenant, day = turn.request.tenant, turn.budget.day
        return await self._budget.commit(reservation, tenant, turn.workflow_id, day, entry.cost_usd)

    async def release(self, turn: AgentTurnInput, *, attempt: int) -> None:
        """Drop ``attempt``'s hold without cost (it failed before any model call was paid)."""
        if turn.budget is not None:
            await self._budget.release(
                _turn_reservation(turn, attempt),
                turn.request.tenant,
                turn.workflow_id,
                turn.budget.day,
            )


def _turn_reservation(turn: AgentTurnInput, attempt: int) -> str:
    return reservation_id(turn.workflow_id, turn.step_id, turn.turn, attempt)
