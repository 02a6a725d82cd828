"""The budget hierarchy, enforced across workers with one Lua script per operation.

Limits nest: a tenant's **daily** limit ($50) ⊃ a **workflow** (conversation) limit ($5) ⊃
**turn-spike** detection (one turn estimated above 10% of the daily limit is refused). Defaults
are overridden per tenant and per template (:func:`resolve_limits`).

Before a turn, :meth:`RedisBudget.reserve` holds the turn's estimated cost; after it,
:meth:`RedisBudget.commit` replaces the hold by the actual cost. Both are single Lua scripts,
so any number of workers racing for the last dollar see one consistent order.

Redis layout (amounts are integer micro-dollars, so nothing drifts; ``P`` is the key prefix)::

    P:day:<tenant>:<YYYY-MM-DD>         hash  committed   actual spend committed that day
                                              reserved    sum of the live reservations
                                              res:<id>    one live reservation's amount
    P:day:<tenant>:<YYYY-MM-DD>:expiry  zset  reservation id -> expiry (server time, ms)
    P:wf:<workflow_id>                  hash  the same for one workflow run
    P:wf:<workflow_id>:expiry           zset
    P:wf:<workflow_id>:commits          hash  committed reservation id -> micro-dollars

Reservations carry an expiry in Redis server time (``TIME``), so workers' clocks do not matter;
every script first purges the expired reservations of the scopes it touches (a worker that died
between reserve and commit frees its hold after ``ttl_s``). Choose ``ttl_s`` longer than the
turn activity's start-to-close timeout: a commit after its reservation expired still counts the
cost, but the budget was not held meanwhile.

Amounts are rounded UP to the micro-dollar (estimates, actuals) and limits DOWN, so Redis never
under-counts; the ledger keeps the exact 1e-8 amounts.

Admission rule, per scope (daily and workflow, each with limit L, committed C, live reserved R,
estimate e, margin m = ``underestimate_margin``):

* ``C + e > L``: refused, ``retryable=False``: the turn does not fit even alone.
* ``C + (1 + m)(R + e) <= L``: granted; even if every reservation in flight costs (1 + m) times
  its estimate, the scope stays within L.
* ``R == 0``: granted, the turn is alone in flight.
* otherwise refused with ``retryable=True``: the last of the budget goes one turn at a time;
  retry once the turns in flight have committed (e.g. let the activity retry with back-off).

Guarantee: as long as no turn costs more than (1 + m) times its estimate and no commit comes
after its reservation expired, committed spend in a scope ends at most ``actual - estimate`` of
ONE turn above its limit (and never above it when
estimates are upper bounds, e.g. :func:`~convergio.costs.pricing.estimate_turn_cost` with the
client's ``max_tokens``). ``m = 0`` gives the plain rule ``C + R + e <= L``, exact only when
estimates are upper bounds. Default m = 1 (a turn may cost up to twice its estimate).

Redis Cluster: a script's keys span a tenant's day and a workflow; put a hash tag in the
prefix (``key_prefix="{convergio-budget}"``) so they share a slot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any, Literal

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field, field_validator

MICRO = Decimal("0.000001")
_MICROS_PER_USD = Decimal(1_000_000)
DAY_KEY_TTL_S = 8 * 24 * 3600  # a tenant's day counters outlive the day by a week
WORKFLOW_KEY_TTL_S = 30 * 24 * 3600  # a workflow's counters, 30 days after its last turn
COMMIT_IDS_TTL_S = 7 * 24 * 3600  # committed ids (commit idempotency), 7 days after the last

Reason = Literal["ok", "daily_limit", "workflow_limit", "turn_spike"]
_REASONS: tuple[Reason, ...] = ("ok", "daily_limit", "workflow_limit", "turn_spike")


def reservation_id(workflow_id: str, step_id: str, turn: int, attempt: int) -> str:
    """Deterministic per attempt of a turn's activity. Each attempt holds and commits its own
    cost: a retry is admitted afresh, and an attempt that paid for a model call and then failed
    keeps that cost counted. The first attempt's id is the turn's id from before attempts had
    their own (``workflow:step:turn``), so turns recorded then are committed under the same id."""
    base = f"{workflow_id}:{step_id}:{turn}"
    return base if attempt <= 1 else f"{base}#{attempt}"


def to_micros(usd: Decimal | float | int, *, round_up: bool = True) -> int:
    """Integer micro-dollars, rounded up (amounts) or down (limits)."""
    amount = Decimal(repr(usd)) if isinstance(usd, float) else Decimal(usd)
    rounding = ROUND_CEILING if round_up else ROUND_FLOOR
    return int((amount * _MICROS_PER_USD).to_integral_value(rounding=rounding))


def from_micros(micros: int) -> Decimal:
    return (Decimal(int(micros)) / _MICROS_PER_USD).quantize(MICRO)


# --------------------------------------------------------------------------- limits


class BudgetLimits(BaseModel):
    """Dollar limits; ``None`` means no limit at that level."""

    model_config = ConfigDict(frozen=True)

    daily_usd: Decimal | None = Field(default=Decimal("50"), ge=0, description="Per tenant and UTC day.")
    workflow_usd: Decimal | None = Field(default=Decimal("5"), ge=0, description="Per workflow run.")
    turn_spike_fraction: Decimal | None = Field(
        default=Decimal("0.10"), gt=0, le=1,
        description="A turn estimated above this fraction of the daily limit is refused.",
    )

    @field_validator("daily_usd", "workflow_usd", "turn_spike_fraction", mode="before")
    @classmethod
    def _exact_decimal(cls, value: Any) -> Any:
        # 0.1 must mean Decimal("0.1"), never the binary float's expansion.
        return Decimal(repr(value)) if isinstance(value, float) else value

    @property
    def turn_spike_usd(self) -> Decimal | None:
        if self.daily_usd is None or self.turn_spike_fraction is None:
            return None
        return self.daily_usd * self.turn_spike_fraction


_LIMIT_FIELDS = tuple(BudgetLimits.model_fields)


def _override_fields(override: BudgetLimits | Mapping[str, Any] | None, where: str) -> dict[str, Any]:
    if override is None:
        return {}
    if isinstance(override, BudgetLimits):
        return {name: getattr(override, name) for name in override.model_fields_set}
    unknown = set(override) - set(_LIMIT_FIELDS)
    if unknown:
        raise ValueError(
            f"budget override for {where}: unknown field(s) {sorted(unknown)}; use {_LIMIT_FIELDS}"
        )
    return dict(override)


def resolve_limits(
    defaults: BudgetLimits,
    tenant_overrides: Mapping[str, BudgetLimits | Mapping[str, Any]] | None,
    template_overrides: Mapping[str, BudgetLimits | Mapping[str, Any]] | None,
    tenant: str,
    template: str,
) -> BudgetLimits:
    """The limits of one run: ``defaults``, then the tenant's override, then the template's.

    Overrides are partial: only the fields they set replace (a mapping's keys, or the fields
    explicitly given to a ``BudgetLimits``); ``None`` as a value removes that limit."""
    values = defaults.model_dump()
    values.update(_override_fields((tenant_overrides or {}).get(tenant), f"tenant {tenant!r}"))
    values.update(_override_fields((template_overrides or {}).get(template), f"template {template!r}"))
    return BudgetLimits.model_validate(values)


# --------------------------------------------------------------------------- results


class ReservationResult(BaseModel):
    reservation_id: str
    granted: bool
    reason: Reason
    retryable: bool = Field(
        default=False, description="Refused only because other turns are in flight: retry after they commit."
    )
    already_committed: bool = Field(
        default=False, description="This id was committed before (e.g. a workflow reset replayed the turn); "
        "nothing is held."
    )
    estimate_usd: Decimal
    daily_committed: Decimal
    daily_reserved: Decimal = Field(description="Live reservations of the day, this one included if granted.")
    workflow_committed: Decimal
    workflow_reserved: Decimal
    remaining_daily: Decimal | None = Field(
        description="Daily limit minus committed and reserved (not below 0); None: no limit."
    )


class CommitResult(BaseModel):
    reservation_id: str
    committed: bool = Field(description="False: this reservation id was committed before; nothing was added.")
    reservation_found: bool = Field(description="The reservation was still live (not expired or released).")
    reserved_usd: Decimal | None = Field(description="What the reservation held, if it was found.")
    actual_usd: Decimal
    daily_committed: Decimal
    daily_reserved: Decimal
    workflow_committed: Decimal
    workflow_reserved: Decimal
    turn_spike: bool = Field(default=False, description="The actual cost is above the turn-spike threshold.")


# --------------------------------------------------------------------------- Lua

# Shared by the scripts. KEYS: 1-2 the day scope (hash, expiry zset), 3-4 the workflow scope,
# 5 the workflow's committed ids. A scope hash holds `committed`, `reserved` and `res:<id>`.
_LUA_PRELUDE = r"""
if redis.replicate_commands then pcall(redis.replicate_commands) end
local DAY = {h = KEYS[1], z = KEYS[2]}
local WF = {h = KEYS[3], z = KEYS[4]}
local COMMITS = KEYS[5]

local function int(x) return string.format('%d', x) end
local function num(v) return tonumber(v) or 0 end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- forget the reservations whose expiry has passed (workers that died before committing)
local function purge(s)
  local expired = redis.call('ZRANGEBYSCORE', s.z, '-inf', now)
  if #expired == 0 then return end
  local total = 0
  for i = 1, #expired do
    local field = 'res:' .. expired[i]
    total = total + num(redis.call('HGET', s.h, field))
    redis.call('HDEL', s.h, field)
  end
  redis.call('ZREMRANGEBYSCORE', s.z, '-inf', now)
  redis.call('HINCRBY', s.h, 'reserved', int(-total))
end

-- remove one live reservation; its amount, or false if it was not there
local function drop(s, id)
  local field = 'res:' .. id
  local amount = redis.call('HGET', s.h, field)
  if not amount then return false end
  redis.call('HDEL', s.h, field)
  redis.call('ZREM', s.z, id)
  redis.call('HINCRBY', s.h, 'reserved', int(-tonumber(amount)))
  return tonumber(amount)
end

-- committed, reserved
local function totals(s)
  local v = redis.call('HMGET', s.h, 'committed', 'reserved')
  return num(v[1]), num(v[2])
end

local function touch(s, ttl)
  redis.call('EXPIRE', s.h, ttl)
  redis.call('EXPIRE', s.z, ttl)
end
"""

# ARGV: id, estimate, daily limit (-1: none), workflow limit (-1: none), spike threshold
# (-1: none), ttl ms, underestimate margin in ppm, day key ttl s, workflow key ttl s, what the
# workflow knows it spent (0: nothing known), then the ids whose holds this one replaces.
# Returns {granted, reason, retryable, already_committed, day C, day R, wf C, wf R};
# reason 0 ok, 1 daily_limit, 2 workflow_limit, 3 turn_spike.
_RESERVE = _LUA_PRELUDE + r"""
local id = ARGV[1]
local estimate = tonumber(ARGV[2])
local daily_limit = tonumber(ARGV[3])
local wf_limit = tonumber(ARGV[4])
local spike = tonumber(ARGV[5])
local ttl_ms = tonumber(ARGV[6])
local margin_ppm = tonumber(ARGV[7])

purge(DAY)
purge(WF)
-- the run's counter never reads less than the run knows it spent (its key expired, or Redis
-- lost it in a restart)
local known = tonumber(ARGV[10]) or 0
if known > 0 and num(redis.call('HGET', WF.h, 'committed')) < known then
  redis.call('HSET', WF.h, 'committed', int(known))
  touch(WF, tonumber(ARGV[9]))
end

local already = redis.call('HEXISTS', COMMITS, id) == 1
if not already then
  -- a retried reserve replaces its own earlier hold instead of adding a second one, and the
  -- holds of the attempts before it (they failed or timed out, or Temporal would not retry)
  drop(DAY, id)
  drop(WF, id)
  for i = 11, #ARGV do
    drop(DAY, ARGV[i])
    drop(WF, ARGV[i])
  end
end
local day_c, day_r = totals(DAY)
local wf_c, wf_r = totals(WF)

local function reply(granted, reason, retryable)
  return {granted, reason, retryable, already and 1 or 0, day_c, day_r, wf_c, wf_r}
end

if already then return reply(1, 0, 0) end  -- a retried turn that already paid: hold nothing
if spike >= 0 and estimate > spike then return reply(0, 3, 0) end

-- 0: grant, 1: refuse but retry once in-flight turns commit, 2: refuse
local function verdict(c, r, limit)
  if limit < 0 then return 0 end
  if c + estimate > limit then return 2 end
  local held = r + estimate
  if c + held + math.ceil(held * margin_ppm / 1000000) <= limit then return 0 end
  if r <= 0 then return 0 end
  return 1
end

local day_v = verdict(day_c, day_r, daily_limit)
local wf_v = verdict(wf_c, wf_r, wf_limit)
if day_v == 2 then return reply(0, 1, 0) end
if wf_v == 2 then return reply(0, 2, 0) end
if day_v == 1 then return reply(0, 1, 1) end
if wf_v == 1 then return reply(0, 2, 1) end

local expiry = now + ttl_ms
for _, s in ipairs({DAY, WF}) do
  redis.call('ZADD', s.z, expiry, id)
  redis.call('HSET', s.h, 'res:' .. id, int(estimate))
  redis.call('HINCRBY', s.h, 'reserved', int(estimate))
end
touch(DAY, tonumber(ARGV[8]))
touch(WF, tonumber(ARGV[9]))
day_r = day_r + estimate
wf_r = wf_r + estimate
return reply(1, 0, 0)
"""

# ARGV: id, actual, day key ttl s, workflow key ttl s, committed ids ttl s.
# Returns {committed, found, reserved amount (-1: not found), day C, day R, wf C, wf R}.
_COMMIT = _LUA_PRELUDE + r"""
local id = ARGV[1]
local actual = ARGV[2]
purge(DAY)
purge(WF)
local committed = 0
local held = false
if redis.call('HEXISTS', COMMITS, id) == 0 then
  local held_day = drop(DAY, id)
  local held_wf = drop(WF, id)
  held = held_day or held_wf
  redis.call('HINCRBY', DAY.h, 'committed', actual)
  redis.call('HINCRBY', WF.h, 'committed', actual)
  redis.call('HSET', COMMITS, id, actual)
  redis.call('EXPIRE', COMMITS, tonumber(ARGV[5]))
  touch(DAY, tonumber(ARGV[3]))
  touch(WF, tonumber(ARGV[4]))
  committed = 1
end
local day_c, day_r = totals(DAY)
local wf_c, wf_r = totals(WF)
return {committed, held and 1 or 0, held or -1, day_c, day_r, wf_c, wf_r}
"""

# ARGV: id. Returns {found, day C, day R, wf C, wf R}.
_RELEASE = _LUA_PRELUDE + r"""
purge(DAY)
purge(WF)
local a = drop(DAY, ARGV[1])
local b = drop(WF, ARGV[1])
local day_c, day_r = totals(DAY)
local wf_c, wf_r = totals(WF)
return {(a or b) and 1 or 0, day_c, day_r, wf_c, wf_r}
"""


# --------------------------------------------------------------------------- the budget


class RedisBudget:
    """Reserve / commit / release turn costs against the daily and workflow limits in Redis."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        key_prefix: str = "convergio:budget",
        underestimate_margin: Decimal | float | int = Decimal(1),
        day_key_ttl_s: int = DAY_KEY_TTL_S,
        workflow_key_ttl_s: int = WORKFLOW_KEY_TTL_S,
        commit_ids_ttl_s: int = COMMIT_IDS_TTL_S,
    ) -> None:
        margin = (
            Decimal(repr(underestimate_margin))
            if isinstance(underestimate_margin, float)
            else Decimal(underestimate_margin)
        )
        if margin < 0:
            raise ValueError("underestimate_margin must not be negative")
        self.redis = redis
        self.key_prefix = key_prefix
        self._margin_ppm = int((margin * 1_000_000).to_integral_value(rounding=ROUND_CEILING))
        self._day_ttl = int(day_key_ttl_s)
        self._wf_ttl = int(workflow_key_ttl_s)
        self._commit_ids_ttl = int(commit_ids_ttl_s)
        self._reserve = redis.register_script(_RESERVE)
        self._commit = redis.register_script(_COMMIT)
        self._release = redis.register_script(_RELEASE)

    # ------------------------------------------------------------------ keys

    def _day(self, tenant: str, day: str) -> str:
        return f"{self.key_prefix}:day:{tenant}:{day}"

    def _wf(self, workflow_id: str) -> str:
        return f"{self.key_prefix}:wf:{workflow_id}"

    def _keys(self, tenant: str, workflow_id: str, day: str) -> list[str]:
        d, w = self._day(tenant, day), self._wf(workflow_id)
        return [d, f"{d}:expiry", w, f"{w}:expiry", f"{w}:commits"]

    # ------------------------------------------------------------------ operations

    async def reserve(
        self,
        reservation_id: str,
        tenant: str,
        workflow_id: str,
        day: str,
        estimate_usd: Decimal,
        limits: BudgetLimits,
        ttl_s: float = 300,
        workflow_spent_usd: Decimal = Decimal(0),
        replaces: Sequence[str] = (),
    ) -> ReservationResult:
        """Hold ``estimate_usd`` for one turn if the limits allow it (see the module doc).

        ``day`` is the tenant's UTC day ``YYYY-MM-DD``, chosen by the caller (workflow code
        passes ``workflow.now()``'s date) and passed unchanged to :meth:`commit`. A reservation id
        already committed is granted with ``already_committed=True`` and holds nothing.
        ``workflow_spent_usd``: what the run itself counted so far; the run's committed spend is
        raised to it when Redis holds less (the run was parked past the key's TTL, or Redis lost
        its data), so the run limit still binds. ``replaces``: reservation ids whose holds this
        one takes over (earlier attempts of the same turn)."""
        if estimate_usd < 0:
            raise ValueError("estimate_usd must not be negative")
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        estimate = to_micros(estimate_usd)
        spike = limits.turn_spike_usd
        raw = await self._reserve(
            keys=self._keys(tenant, workflow_id, day),
            args=[
                reservation_id,
                estimate,
                -1 if limits.daily_usd is None else to_micros(limits.daily_usd, round_up=False),
                -1 if limits.workflow_usd is None else to_micros(limits.workflow_usd, round_up=False),
                -1 if spike is None else to_micros(spike, round_up=False),
                max(1, int(ttl_s * 1000)),
                self._margin_ppm,
                self._day_ttl,
                self._wf_ttl,
                to_micros(workflow_spent_usd, round_up=False),
                *replaces,
            ],
        )
        granted, reason, retryable, already, day_c, day_r, wf_c, wf_r = (int(v) for v in raw)
        remaining = None
        if limits.daily_usd is not None:
            remaining = max(Decimal(0), limits.daily_usd - from_micros(day_c) - from_micros(day_r))
        return ReservationResult(
            reservation_id=reservation_id,
            granted=bool(granted),
            reason=_REASONS[reason],
            retryable=bool(retryable),
            already_committed=bool(already),
            estimate_usd=estimate_usd,
            daily_committed=from_micros(day_c),
            daily_reserved=from_micros(day_r),
            workflow_committed=from_micros(wf_c),
            workflow_reserved=from_micros(wf_r),
            remaining_daily=remaining,
        )

    async def commit(
        self,
        reservation_id: str,
        tenant: str,
        workflow_id: str,
        day: str,
        actual_usd: Decimal,
        *,
        limits: BudgetLimits | None = None,
    ) -> CommitResult:
        """Count ``actual_usd`` once for this turn and drop its reservation.

        Idempotent by ``reservation_id``: a second commit adds nothing (``committed=False``).
        ``limits`` only serve to flag a turn whose actual cost was a spike."""
        if actual_usd < 0:
            raise ValueError("actual_usd must not be negative")
        actual = to_micros(actual_usd)
        raw = await self._commit(
            keys=self._keys(tenant, workflow_id, day),
            args=[reservation_id, actual, self._day_ttl, self._wf_ttl, self._commit_ids_ttl],
        )
        committed, found, held, day_c, day_r, wf_c, wf_r = (int(v) for v in raw)
        spike = limits.turn_spike_usd if limits is not None else None
        return CommitResult(
            reservation_id=reservation_id,
            committed=bool(committed),
            reservation_found=bool(found),
            reserved_usd=from_micros(held) if held >= 0 else None,
            actual_usd=actual_usd,
            daily_committed=from_micros(day_c),
            daily_reserved=from_micros(day_r),
            workflow_committed=from_micros(wf_c),
            workflow_reserved=from_micros(wf_r),
            turn_spike=bool(committed) and spike is not None and actual_usd > spike,
        )

    async def release(self, reservation_id: str, tenant: str, workflow_id: str, day: str) -> bool:
        """Drop a reservation without cost (the turn did not run); whether it was still live."""
        raw = await self._release(keys=self._keys(tenant, workflow_id, day), args=[reservation_id])
        return bool(int(raw[0]))

    async def spent(self, tenant: str, day: str) -> Decimal:
        """Committed spend of a tenant on a day (reservations not included)."""
        return from_micros(int(await self.redis.hget(self._day(tenant, day), "committed") or 0))

    async def reserved(self, tenant: str, day: str) -> Decimal:
        """Live reservations of a tenant's day as last purged (expired ones may linger until the
        next script touches the day)."""
        return from_micros(int(await self.redis.hget(self._day(tenant, day), "reserved") or 0))

    async def workflow_spent(self, workflow_id: str) -> Decimal:
        """Committed spend of one workflow run."""
        return from_micros(int(await self.redis.hget(self._wf(workflow_id), "committed") or 0))
