"""What a model turn costs, and the hook that announces every turn's cost.

Prices come from the shipped ``prices.yaml`` (dollars per million prompt / completion tokens),
merged with an optional override file of the same format (``CONVERGIO_PRICE_TABLE``). Amounts
are :class:`~decimal.Decimal` dollars quantized to 1e-8, the precision of the ledger column.

The hook: every part that cares about spend (metrics, events) calls :func:`subscribe` once; the
code that finishes a turn calls :func:`emit` with its :class:`TurnCost`. Callbacks are
synchronous and must be quick; an exception in one is logged and never reaches the turn.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

logger = logging.getLogger(__name__)

USD_QUANTUM = Decimal("0.00000001")  # 1e-8 dollars: numeric(14,8) in the ledger
_PER_TOKENS = Decimal(1_000_000)
DEFAULT_KEY = "default"
# A dated or suffixed model name finds its family at one of these characters.
_BOUNDARIES = frozenset("-._@:")


class PriceTableError(ValueError):
    """A price file is missing or malformed; the message names the file."""


class UnknownModelPriceError(LookupError):
    """No price for a model label and no ``default`` entry to fall back on."""

    def __init__(self, label: str) -> None:
        super().__init__(
            f"no price for model {label!r}: add it (dollars per million input/output tokens) to "
            "the price table override file (CONVERGIO_PRICE_TABLE), or add a 'default' entry"
        )
        self.label = label


class ModelPrice(BaseModel):
    """Dollars per million tokens."""

    model_config = ConfigDict(frozen=True)

    input: Decimal = Field(ge=0, description="Dollars per million prompt tokens.")
    output: Decimal = Field(ge=0, description="Dollars per million completion tokens.")

    def cost(self, prompt_tokens: int, completion_tokens: int) -> Decimal:
        """Exact (unrounded) dollars for this usage."""
        if prompt_tokens < 0 or completion_tokens < 0:
            raise ValueError("token counts must not be negative")
        return (self.input * prompt_tokens + self.output * completion_tokens) / _PER_TOKENS


def _split_label(label: str) -> tuple[str | None, str]:
    provider, sep, model = label.partition(":")
    return (provider, model) if sep else (None, label)


class PriceTable(BaseModel):
    """Prices by model key; :meth:`price_for` resolves a project model label to one of them."""

    as_of: str | None = None
    currency: str = "USD"
    models: dict[str, ModelPrice]
    aliases: dict[str, str] = Field(default_factory=dict)

    _cache: dict[str, str | None] = PrivateAttr(default_factory=dict)

    @field_validator("models", "aliases", mode="before")
    @classmethod
    def _lower_keys(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(k).strip().lower(): v for k, v in value.items()}
        return value

    @field_validator("aliases")
    @classmethod
    def _lower_targets(cls, value: dict[str, str]) -> dict[str, str]:
        return {k: v.strip().lower() for k, v in value.items()}

    # ------------------------------------------------------------------ loading

    @model_validator(mode="after")
    def _aliases_have_prices(self) -> PriceTable:
        for name, target in self.aliases.items():
            if target not in self.models:
                raise ValueError(f"alias {name!r} points at {target!r}, which has no price")
        return self

    @classmethod
    def load(cls, override_path: str | Path | None = None) -> PriceTable:
        """The shipped table, with ``override_path`` (same format) merged over it by key.

        In the override a key set to ``null`` removes that entry (``default: null`` makes
        unknown models an error)."""
        base = _parse_yaml(
            (resources.files("convergio.costs") / "prices.yaml").read_text(encoding="utf-8"),
            "convergio/costs/prices.yaml",
        )
        if override_path is None:
            return cls._from_mapping(base, "convergio/costs/prices.yaml")
        path = Path(override_path).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise PriceTableError(f"price table {path}: cannot read it ({error})") from error
        override = _parse_yaml(text, str(path))
        merged: dict[str, Any] = {**base}
        for key, value in override.items():
            if key in ("models", "aliases"):
                if value is None:
                    continue
                if not isinstance(value, Mapping):
                    raise PriceTableError(f"price table {path}: '{key}' must be a mapping")
                section = {str(k).strip().lower(): v for k, v in (merged.get(key) or {}).items()}
                for name, entry in value.items():
                    name = str(name).strip().lower()
                    if entry is None:
                        section.pop(name, None)
                    else:
                        section[name] = entry
                merged[key] = section
            else:
                merged[key] = value
        return cls._from_mapping(merged, f"{path} (merged over the shipped table)")

    @classmethod
    def _from_mapping(cls, data: Mapping[str, Any], source: str) -> PriceTable:
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise PriceTableError(f"price table {source}: {error}") from error

    # ------------------------------------------------------------------ lookup

    def resolve(self, model_label: str) -> str | None:
        """The key of ``models`` that prices ``model_label`` (``None``: unknown, no default)."""
        label = model_label.strip().lower()
        if label not in self._cache:
            self._cache[label] = self._resolve(label)
        return self._cache[label]

    def _resolve(self, label: str) -> str | None:
        provider, model = _split_label(label)
        for name in (label, model):
            target = self.aliases.get(name)
            if target is not None:
                return target
        if label in self.models:
            return label
        if provider is not None and f"{provider}:*" in self.models:
            return f"{provider}:*"
        names = [model]
        if "/" in model:  # vendor/model, as OpenAI-compatible routers name them
            names.append(model.rsplit("/", 1)[-1])
        family_keys = [k for k in self.models if k != DEFAULT_KEY and ":" not in k]
        for name in names:
            if name in family_keys:
                return name
            prefixes = [
                k for k in family_keys
                if name.startswith(k) and len(name) > len(k) and name[len(k)] in _BOUNDARIES
            ]
            if prefixes:
                return max(prefixes, key=len)
        return DEFAULT_KEY if DEFAULT_KEY in self.models else None

    def price_for(self, model_label: str) -> ModelPrice:
        key = self.resolve(model_label)
        if key is None:
            raise UnknownModelPriceError(model_label)
        return self.models[key]

    def cost_usd(self, model_label: str, prompt_tokens: int, completion_tokens: int) -> Decimal:
        """What a turn cost, from the usage the model client reported (rounded half-up to 1e-8)."""
        exact = self.price_for(model_label).cost(prompt_tokens, completion_tokens)
        return exact.quantize(USD_QUANTUM, rounding=ROUND_HALF_UP)

    def estimate_turn_cost(self, model_label: str, prompt_tokens: int, max_completion_tokens: int) -> Decimal:
        """The most a turn can cost if the answer runs to ``max_completion_tokens`` (rounded up)."""
        exact = self.price_for(model_label).cost(prompt_tokens, max_completion_tokens)
        return exact.quantize(USD_QUANTUM, rounding=ROUND_CEILING)


def _parse_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise PriceTableError(f"price table {source}: not valid YAML ({error})") from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PriceTableError(f"price table {source}: expected a mapping with 'models'")
    return data


@lru_cache(maxsize=8)
def _cached_table(override_path: str | None) -> PriceTable:
    return PriceTable.load(override_path)


def default_price_table(override_path: str | Path | None = None) -> PriceTable:
    """The shipped table merged with ``override_path``, loaded once per path."""
    return _cached_table(None if override_path is None else str(Path(override_path).expanduser()))


def cost_usd(
    model_label: str, prompt_tokens: int, completion_tokens: int, *, table: PriceTable | None = None
) -> Decimal:
    """Dollars of one turn (``table``: the shipped one unless given)."""
    return (table or default_price_table()).cost_usd(model_label, prompt_tokens, completion_tokens)


def estimate_turn_cost(
    model_label: str, prompt_tokens: int, max_completion_tokens: int, *, table: PriceTable | None = None
) -> Decimal:
    """Upper bound of one turn's dollars, to reserve before it runs."""
    table = table or default_price_table()
    return table.estimate_turn_cost(model_label, prompt_tokens, max_completion_tokens)


# --------------------------------------------------------------------------- the per-turn hook


class TurnCost(BaseModel):
    """One model turn's usage and cost; the unit the ledger records and listeners receive."""

    workflow_id: str
    step_id: str
    turn: int = Field(ge=0)
    tenant: str
    template: str
    agent: str
    model: str = Field(description="The model label, e.g. 'openai:gpt-4o-mini' or 'offline'.")
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    cost_usd: Decimal = Field(ge=0, description="Dollars, quantized to 1e-8 (the ledger's precision).")
    quality_score: float | None = Field(default=None, description="Judged quality, if known.")
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @field_validator("cost_usd", mode="before")
    @classmethod
    def _cost_decimal(cls, value: Any) -> Any:
        return Decimal(repr(value)) if isinstance(value, float) else value

    @field_validator("cost_usd")
    @classmethod
    def _cost_quantized(cls, value: Decimal) -> Decimal:
        return value.quantize(USD_QUANTUM, rounding=ROUND_HALF_UP)

    @property
    def turn_key(self) -> str:
        """``workflow:step:turn``, the ledger's key of this turn (for logs)."""
        return f"{self.workflow_id}:{self.step_id}:{self.turn}"


CostListener = Callable[[TurnCost], None]

_listeners: list[CostListener] = []
_listeners_lock = threading.Lock()


def subscribe(callback: CostListener) -> Callable[[], None]:
    """Call ``callback`` with every emitted :class:`TurnCost`; returns a function that unsubscribes."""
    with _listeners_lock:
        _listeners.append(callback)
    return lambda: unsubscribe(callback)


def unsubscribe(callback: CostListener) -> None:
    with _listeners_lock:
        try:
            _listeners.remove(callback)
        except ValueError:
            pass


def emit(turn_cost: TurnCost) -> None:
    """Hand ``turn_cost`` to every listener; a listener's exception is logged, not raised."""
    with _listeners_lock:
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(turn_cost)
        except Exception:
            logger.exception("cost listener %r failed for turn %s", listener, turn_cost.turn_key)
