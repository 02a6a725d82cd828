"""Prices: the shipped table, label matching, exact Decimal costs, overrides and the cost hook."""

from __future__ import annotations

import logging
from decimal import Decimal
from pathlib import Path

import pytest

from convergio.costs import pricing
from convergio.costs.pricing import (
    PriceTable,
    PriceTableError,
    TurnCost,
    UnknownModelPriceError,
    cost_usd,
    default_price_table,
    emit,
    estimate_turn_cost,
    subscribe,
)

REQUIRED = [
    "gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o3-mini", "o4-mini",
    "claude-3-5-haiku", "claude-3-5-sonnet", "claude-3-7-sonnet", "claude-sonnet-4", "claude-opus-4",
    "ollama:*", "offline", "default",
]


def test_shipped_table_has_the_common_models() -> None:
    table = PriceTable.load()
    for key in REQUIRED:
        assert key in table.models, key
    assert table.as_of
    assert table.models["offline"] == table.models["gpt-4o-mini"]  # the demo exercises budgets
    assert table.models["ollama:*"].input == 0 and table.models["ollama:*"].output == 0
    # the fallback is conservative: no listed model is dearer
    assert all(
        p.input <= table.models["default"].input and p.output <= table.models["default"].output
        for p in table.models.values()
    )


@pytest.mark.parametrize(
    ("label", "key"),
    [
        ("offline", "offline"),
        ("openai:gpt-4o-mini", "gpt-4o-mini"),
        ("openai:gpt-4o", "gpt-4o"),
        ("openai:gpt-4o-2024-08-06", "gpt-4o"),
        ("openai:gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("openai:gpt-4.1", "gpt-4.1"),
        ("openai:gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
        ("openai:gpt-4.1-nano", "gpt-4.1-nano"),
        ("openai:o3-mini-2025-01-31", "o3-mini"),
        ("openai:o4-mini", "o4-mini"),
        ("azure:gpt-4o-mini", "gpt-4o-mini"),
        ("azure:gpt-4.1-prod", "gpt-4.1"),
        ("anthropic:claude-3-5-haiku-20241022", "claude-3-5-haiku"),
        ("anthropic:claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("anthropic:claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
        ("anthropic:claude-3-7-sonnet-20250219", "claude-3-7-sonnet"),
        ("anthropic:claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("anthropic:claude-opus-4-20250514", "claude-opus-4"),
        ("ollama:llama3.2", "ollama:*"),
        ("ollama:qwen2.5:7b", "ollama:*"),
        ("openai-compatible:anthropic/claude-3-5-sonnet", "claude-3-5-sonnet"),
        ("OpenAI:GPT-4o-Mini", "gpt-4o-mini"),
        ("openai-compatible:my-llama", "default"),
        ("openai:gpt-4omega", "default"),  # a prefix must end at a boundary
        ("openai:o1-pro-2025-03-19", "o1-pro"),  # premium variants are not their family
        ("openai:o3-pro", "o3-pro"),
        ("openai:o3-deep-research-2025-06-26", "o3-deep-research"),
        ("openai:o4-mini-deep-research", "o4-mini-deep-research"),
    ],
)
def test_labels_resolve_to_their_family(label: str, key: str) -> None:
    assert default_price_table().resolve(label) == key


def test_costs_are_exact_decimals() -> None:
    # gpt-4o: $2.50 / $10.00 per million tokens
    assert cost_usd("openai:gpt-4o", 1000, 500) == Decimal("0.00750000")
    assert cost_usd("offline", 1_000_000, 1_000_000) == Decimal("0.75")
    assert cost_usd("anthropic:claude-3-5-haiku-20241022", 12_345, 678) == Decimal("0.012588")
    assert cost_usd("ollama:llama3.2", 10_000, 10_000) == 0
    assert isinstance(cost_usd("offline", 1, 1), Decimal)
    assert cost_usd("offline", 1, 1).as_tuple().exponent == -8
    with pytest.raises(ValueError):
        cost_usd("offline", -1, 0)


def test_estimate_is_an_upper_bound_rounded_up(tmp_path: Path) -> None:
    override = tmp_path / "prices.yaml"
    override.write_text("models:\n  odd: {input: 0.123456789, output: 0.0}\n")
    table = PriceTable.load(override)
    # 1 token: $1.23456789e-7 -> cost rounds half-up to 1e-8, the estimate rounds up
    assert table.cost_usd("odd", 1, 0) == Decimal("0.00000012")
    assert table.estimate_turn_cost("odd", 1, 0) == Decimal("0.00000013")
    bound = estimate_turn_cost("openai:gpt-4.1", 3000, 1024)
    for completion in (0, 1, 100, 1023, 1024):
        assert cost_usd("openai:gpt-4.1", 3000, completion) <= bound
    assert estimate_turn_cost("openai:gpt-4.1", 3000, 1024) == Decimal("0.0141920")


def test_override_file_merges_over_the_shipped_table(tmp_path: Path) -> None:
    override = tmp_path / "prices.yaml"
    override.write_text(
        "as_of: '2099-01-01'\n"
        "models:\n"
        "  gpt-4o: {input: 1.25, output: 5}\n"
        "  my-finetune: {input: 3, output: 12}\n"
        "  'openai-compatible:*': {input: 0, output: 0}\n"
        "aliases:\n"
        "  'azure:prod-chat': gpt-4o\n"
    )
    table = PriceTable.load(override)
    assert table.as_of == "2099-01-01"
    assert table.cost_usd("openai:gpt-4o", 1000, 1000) == Decimal("0.00625")  # overridden
    assert table.cost_usd("azure:prod-chat", 1000, 1000) == Decimal("0.00625")  # alias
    assert table.cost_usd("openai:my-finetune-v2", 1_000_000, 0) == Decimal("3")  # new family
    assert table.cost_usd("openai-compatible:my-llama", 5000, 5000) == 0  # provider wildcard
    assert table.models["gpt-4o-mini"] == PriceTable.load().models["gpt-4o-mini"]  # kept


def test_unknown_model_is_an_error_without_default(tmp_path: Path) -> None:
    override = tmp_path / "prices.yaml"
    override.write_text("models:\n  default: null\n")
    table = PriceTable.load(override)
    assert "default" not in table.models
    with pytest.raises(UnknownModelPriceError, match="openai-compatible:mystery"):
        table.cost_usd("openai-compatible:mystery", 10, 10)
    assert table.cost_usd("offline", 0, 0) == 0  # known ones still priced


@pytest.mark.parametrize(
    "text",
    [
        "models:\n  gpt-4o: {input: -1, output: 2}\n",
        "models:\n  gpt-4o: {input: 1}\n",
        "models: [1, 2]\n",
        "aliases:\n  'azure:x': no-such-model\n",
        "models: {unclosed\n",
        "- a list\n",
    ],
)
def test_malformed_override_names_the_file(tmp_path: Path, text: str) -> None:
    override = tmp_path / "bad-prices.yaml"
    override.write_text(text)
    with pytest.raises(PriceTableError, match="bad-prices.yaml"):
        PriceTable.load(override)


def test_missing_override_file(tmp_path: Path) -> None:
    with pytest.raises(PriceTableError, match="cannot read"):
        PriceTable.load(tmp_path / "nope.yaml")


def _turn(**changes: object) -> TurnCost:
    values: dict[str, object] = dict(
        workflow_id="wf-1", step_id="analysis", turn=3, tenant="acme", template="strategic-analysis",
        agent="cfo", model="openai:gpt-4o-mini", prompt_tokens=1000, completion_tokens=500,
        cost_usd=cost_usd("openai:gpt-4o-mini", 1000, 500),
    )
    values.update(changes)
    return TurnCost.model_validate(values)


def test_turn_cost_model() -> None:
    turn = _turn()
    assert turn.turn_key == "wf-1:analysis:3"
    assert turn.cost_usd == Decimal("0.00045")
    assert turn.at.tzinfo is not None
    assert _turn(cost_usd=0.1).cost_usd == Decimal("0.10000000")  # float -> exact decimal
    assert _turn(cost_usd=Decimal("0.123456789")).cost_usd == Decimal("0.12345679")
    assert TurnCost.model_validate_json(turn.model_dump_json()) == turn
    with pytest.raises(ValueError):
        _turn(cost_usd=Decimal("-0.01"))


def test_cost_listeners_receive_turns_and_failures_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[TurnCost] = []
    after: list[TurnCost] = []

    def broken(_: TurnCost) -> None:
        raise RuntimeError("metrics backend down")

    stop_seen = subscribe(seen.append)
    stop_broken = subscribe(broken)
    stop_after = subscribe(after.append)
    try:
        turn = _turn()
        with caplog.at_level(logging.ERROR, logger=pricing.__name__):
            emit(turn)  # does not raise
        assert seen == [turn] and after == [turn]
        assert "metrics backend down" in caplog.text and "wf-1:analysis:3" in caplog.text
    finally:
        stop_seen()
        stop_broken()
        stop_after()
    emit(_turn(turn=4))
    assert len(seen) == 1  # unsubscribed
    stop_seen()  # twice is harmless
