"""The tool registry and the shipped financial tools."""

from __future__ import annotations

import math

import pytest
from autogen_core import CancellationToken
from autogen_core.tools import FunctionTool
from pydantic import BaseModel

from convergio.tools import registry
from convergio.tools.financial import (
    FinancialModelInput,
    financial_model,
    internal_rate_of_return,
    irr_candidates,
    net_present_value,
)
from convergio.tools.registry import (
    ToolInputError,
    UnknownToolError,
    as_autogen_tool,
    get_tool,
    register_tool,
    run_tool,
    tool_names,
)


def model(investment: float, flows: list[float], rate: float) -> dict:
    return financial_model(
        FinancialModelInput(initial_investment=investment, cash_flows=flows, discount_rate=rate)
    ).model_dump()


# --- registry ------------------------------------------------------------------------------------


def test_builtin_tools_are_registered() -> None:
    assert {"financial_model", "market_sizing", "break_even"} <= set(tool_names())
    spec = get_tool("financial_model")
    assert spec.input_model is FinancialModelInput
    assert spec.output_model.__name__ == "FinancialModelOutput"
    assert spec.description and callable(spec.function)
    assert "discount_rate" in spec.parameters_schema()["properties"]


def test_unknown_tool() -> None:
    with pytest.raises(UnknownToolError) as info:
        get_tool("crystal_ball")
    assert isinstance(info.value, KeyError)
    assert "crystal_ball" in str(info.value) and "financial_model" in str(info.value)


def test_register_tool_requires_one_pydantic_argument() -> None:
    with pytest.raises(TypeError):

        @register_tool("bad_tool", "Two arguments.")
        def bad(a: int, b: int) -> int:  # pragma: no cover - never registered
            return a + b

    assert "bad_tool" not in tool_names()


async def test_register_and_run_a_custom_tool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    class AddInput(BaseModel):
        a: int
        b: int = 1

    class AddOutput(BaseModel):
        total: int

    @register_tool("add_numbers", "Add two integers.")
    async def add_numbers(params: AddInput) -> AddOutput:
        return AddOutput(total=params.a + params.b)

    assert await run_tool("add_numbers", {"a": 2}) == {"total": 3}
    with pytest.raises(ValueError, match="already registered"):

        @register_tool("financial_model", "Clash.")
        def clash(params: AddInput) -> AddOutput:  # pragma: no cover
            return AddOutput(total=0)


# --- financial_model ---------------------------------------------------------------------------


def test_financial_model_known_values() -> None:
    out = model(1000, [500, 500, 500], 0.10)
    # by hand: 500/1.1 + 500/1.21 + 500/1.331 - 1000
    npv = 500 / 1.1 + 500 / 1.1**2 + 500 / 1.1**3 - 1000
    assert out["npv"] == pytest.approx(npv, abs=1e-9)
    assert out["npv"] == pytest.approx(243.43, abs=0.005)
    assert out["irr"] == pytest.approx(0.2338, abs=5e-5)
    # the IRR zeroes the NPV
    r = out["irr"]
    assert 500 / (1 + r) + 500 / (1 + r) ** 2 + 500 / (1 + r) ** 3 == pytest.approx(1000, abs=1e-6)
    assert out["payback_years"] == pytest.approx(2.0)
    # discounted: 454.55 + 413.22 = 867.77 after 2 years, then 132.23 / 375.66 of year 3
    d1, d2, d3 = 500 / 1.1, 500 / 1.1**2, 500 / 1.1**3
    assert out["discounted_payback_years"] == pytest.approx(2 + (1000 - d1 - d2) / d3, abs=1e-9)
    assert out["profitability_index"] == pytest.approx((npv + 1000) / 1000)
    assert "NPV EUR 243.43" in out["summary"] and "IRR 23.38%" in out["summary"]


def test_fractional_payback() -> None:
    out = model(1000, [400, 400, 400, 400], 0.05)
    assert out["payback_years"] == pytest.approx(2.5)
    assert out["irr"] == pytest.approx(0.218622, abs=1e-5)


def test_never_paid_back() -> None:
    out = model(1000, [100, 100, 100], 0.08)
    assert out["payback_years"] is None
    assert out["discounted_payback_years"] is None
    assert out["npv"] < 0
    # IRR exists (negative): 300 returned on 1000 → about -48%
    assert out["irr"] is not None and out["irr"] < 0
    assert net_present_value(out["irr"], [-1000, 100, 100, 100]) == pytest.approx(0, abs=1e-6)
    assert "never within the horizon" in out["summary"]


def test_paid_back_only_if_it_stays_paid_back() -> None:
    """Earning the investment back and falling behind again later is no payback (it reported the
    first time the money was recovered)."""
    assert model(100, [230, -132], 0.0)["payback_years"] is None  # ends 2 short
    assert model(100, [100, -200, 0, 50, 200], 0.0)["payback_years"] == pytest.approx(4 + 150 / 200)
    assert model(100, [50, 60], 0.0)["payback_years"] == pytest.approx(1 + 50 / 60)


async def test_numbers_out_of_range_are_a_clear_tool_error() -> None:
    """An overflow, or an infinite result, was a raw exception that Temporal retried in vain."""
    cases = [
        ({"initial_investment": 100, "cash_flows": [1.0] * 45, "discount_rate": -0.9999999}, "(arguments)"),
        ({"initial_investment": 100, "cash_flows": [1e9, -1e9] * 25, "discount_rate": -0.999999}, "npv"),
    ]
    for arguments, field in cases:
        with pytest.raises(ToolInputError) as info:
            await run_tool("financial_model", arguments)
        assert info.value.fields == [field] and "out of range" in str(info.value)


def test_paid_back_but_not_discounted() -> None:
    out = model(1000, [500, 500], 0.10)
    assert out["payback_years"] == pytest.approx(2.0)
    assert out["discounted_payback_years"] is None
    assert out["irr"] == pytest.approx(0.0, abs=1e-9)


def test_irr_none_without_sign_change() -> None:
    out = model(1000, [-100, -200], 0.10)
    assert out["irr"] is None
    assert out["payback_years"] is None
    assert internal_rate_of_return([-1000, 0, 0]) is None
    assert internal_rate_of_return([100, 200]) is None


def test_irr_with_several_sign_changes() -> None:
    # -100 + 230/(1+r) - 132/(1+r)^2 = 0  →  r = 10% or 20%
    flows = [-100, 230, -132]
    roots = irr_candidates(flows)
    assert roots == pytest.approx([0.10, 0.20], abs=1e-9)
    assert internal_rate_of_return(flows) == pytest.approx(0.10, abs=1e-9)


def _flows_with_rates(*rates: float) -> list[float]:
    """Cash flows whose NPV is ``-(x - x1)(x - x2)…`` in ``x = 1 / (1 + r)``: IRRs exactly ``rates``."""
    flows = [-1.0]
    for rate in rates:
        root = 1 / (1 + rate)
        shifted = [0.0, *flows]  # flows times x, minus flows times root
        flows = [a - root * b for a, b in zip(shifted, [*flows, 0.0])]
    return flows


def test_irr_finds_two_rates_closer_than_the_old_grid_step() -> None:
    """Two IRRs within one step of the old 2,000-point grid (~0.4% near 10%) gave no sign change
    at any sample, so neither was found."""
    for rates in [(0.10, 0.1001), (0.05, 0.0505), (0.10, 0.1001, 0.30), (-0.5, -0.4999)]:
        flows = _flows_with_rates(*rates)
        roots = irr_candidates(flows)
        assert roots == pytest.approx(sorted(rates), abs=1e-9), flows
        assert all(net_present_value(r, flows) == pytest.approx(0, abs=1e-12) for r in roots)
    assert internal_rate_of_return(_flows_with_rates(0.10, 0.1001)) == pytest.approx(0.10, abs=1e-9)


def test_irr_double_root_where_npv_touches_zero() -> None:
    """NPV that touches zero without changing sign has an IRR there (no sign change to bracket)."""
    assert irr_candidates([-1, 2, -1]) == [0.0]  # -(1 - x)**2: a double root at 0%
    assert internal_rate_of_return([-1, 2, -1]) == 0.0
    out = model(1, [2, -1], 0.05)
    assert out["irr"] == 0.0 and "IRR 0.00%" in out["summary"] and "several" not in out["summary"]
    assert irr_candidates([100, -220, 121]) == pytest.approx([0.10], abs=1e-9)  # (10 - 11x)**2
    assert irr_candidates([-1, 3, -3, 1]) == [0.0]  # -(1 - x)**3, a triple root
    # a double root next to a simple one
    assert irr_candidates(_flows_with_rates(0.10, 0.10, 0.30)) == pytest.approx([0.10, 0.30], abs=1e-9)
    # just short of touching: no IRR; just past it: two, either side of 0%
    assert irr_candidates([-1 - 1e-10, 2, -1]) == []
    assert irr_candidates([-1 + 1e-10, 2, -1]) == pytest.approx([-1e-5, 1e-5], abs=1e-8)


def test_irr_with_many_sign_changes_agrees_with_its_own_npv() -> None:
    """Each root zeroes the NPV (to rounding), roots are distinct, and the result is the same every time."""
    import random

    rng = random.Random(11)
    for _ in range(200):
        flows = [rng.uniform(-1000, 1000) for _ in range(rng.randint(3, 12))]
        roots = irr_candidates(flows)
        assert roots == sorted(set(roots)) and roots == irr_candidates(flows)
        for r in roots:
            assert -0.99 <= r <= 10.0
            size = net_present_value(r, [abs(flow) for flow in flows])  # near -99% the terms are huge
            assert net_present_value(r, flows) == pytest.approx(0, abs=1e-10 * size)


def test_irr_single_root_unchanged() -> None:
    """Conventional flows (one sign change) keep their bisection in r: the same rates as before."""
    assert irr_candidates([-1000, 500, 500, 500]) == [pytest.approx(0.23375192852821158, abs=1e-15)]
    assert internal_rate_of_return([-1000, 100, 100, 100]) == pytest.approx(-0.4244174438318141, abs=1e-15)
    assert internal_rate_of_return([-100, 0, 0, 150]) == pytest.approx(1.5 ** (1 / 3) - 1, abs=1e-12)


def test_irr_high_rate_and_deterministic() -> None:
    flows = [-100, 600]  # IRR 500%
    assert internal_rate_of_return(flows) == pytest.approx(5.0, rel=1e-9)
    assert internal_rate_of_return(flows) == internal_rate_of_return(flows)
    assert internal_rate_of_return([-100, 2000]) is None  # 1900% is outside (-99%, 1000%]


def test_zero_discount_rate() -> None:
    out = model(300, [100, 100, 100, 100], 0.0)
    assert out["npv"] == pytest.approx(100)
    assert out["payback_years"] == out["discounted_payback_years"] == pytest.approx(3.0)


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"initial_investment": 0, "cash_flows": [1], "discount_rate": 0.1}, "initial_investment"),
        ({"initial_investment": 10, "cash_flows": [], "discount_rate": 0.1}, "cash_flows"),
        ({"initial_investment": 10, "cash_flows": [1] * 51, "discount_rate": 0.1}, "cash_flows"),
        ({"initial_investment": 10, "cash_flows": [1, "x"], "discount_rate": 0.1}, "cash_flows[1]"),
        ({"initial_investment": 10, "cash_flows": [1], "discount_rate": -1}, "discount_rate"),
        ({"initial_investment": 10, "cash_flows": [1], "discount_rate": 1.5}, "discount_rate"),
        ({"initial_investment": 10, "cash_flows": [1]}, "discount_rate"),
        ({"initial_investment": 10, "cash_flows": [1], "discount_rate": 0.1, "tax": 1}, "tax"),
        ({"initial_investment": float("nan"), "cash_flows": [1], "discount_rate": 0.1}, "initial_investment"),
    ],
)
async def test_bad_financial_input_names_the_field(arguments: dict, field: str) -> None:
    with pytest.raises(ToolInputError) as info:
        await run_tool("financial_model", arguments)
    assert info.value.tool == "financial_model"
    assert field in info.value.fields
    assert str(info.value).startswith(f"financial_model: {field}: ")


async def test_break_even_rejects_price_not_above_variable_cost() -> None:
    with pytest.raises(ToolInputError) as info:
        await run_tool("break_even", {"fixed_costs": 1000, "price_per_unit": 10, "variable_cost_per_unit": 10})
    assert info.value.fields == ["variable_cost_per_unit"]
    assert "price_per_unit" in str(info.value)


# --- run_tool round trips ------------------------------------------------------------------------


async def test_run_tool_financial_model_round_trip() -> None:
    result = await run_tool(
        "financial_model", {"initial_investment": "1000", "cash_flows": [500, 500, 500], "discount_rate": 0.1}
    )
    assert set(result) == {
        "npv", "irr", "payback_years", "discounted_payback_years", "profitability_index", "summary",
    }
    assert result["npv"] == pytest.approx(243.426, abs=1e-3)
    assert result == get_tool("financial_model").output_model.model_validate(result).model_dump()


async def test_market_sizing() -> None:
    result = await run_tool(
        "market_sizing",
        {"total_companies": 10_000, "adoption_rate": 0.05, "annual_contract_value": 12_000, "serviceable_share": 0.3},
    )
    assert result["tam"] == pytest.approx(120_000_000)
    assert result["sam"] == pytest.approx(36_000_000)
    assert result["som"] == pytest.approx(1_800_000)
    assert result["customers"] == pytest.approx(150)
    assert "TAM EUR 120,000,000.00" in result["summary"]
    with pytest.raises(ToolInputError, match="market_sizing: adoption_rate"):
        await run_tool(
            "market_sizing",
            {"total_companies": 10, "adoption_rate": 1.2, "annual_contract_value": 1, "serviceable_share": 0.3},
        )


async def test_break_even() -> None:
    result = await run_tool("break_even", {"fixed_costs": 10_000, "price_per_unit": 30, "variable_cost_per_unit": 17})
    assert result["contribution_margin_per_unit"] == pytest.approx(13)
    assert result["break_even_units"] == pytest.approx(10_000 / 13)
    assert result["break_even_units_whole"] == math.ceil(10_000 / 13) == 770
    assert result["break_even_revenue"] == pytest.approx(10_000 / 13 * 30)


async def test_run_tool_unknown() -> None:
    with pytest.raises(UnknownToolError):
        await run_tool("crystal_ball", {})


# --- AutoGen -------------------------------------------------------------------------------------


async def test_as_autogen_tool_runs() -> None:
    tool = as_autogen_tool("financial_model")
    assert isinstance(tool, FunctionTool)
    assert tool.name == "financial_model"
    schema = tool.schema
    assert schema["parameters"]["required"] == ["initial_investment", "cash_flows", "discount_rate"]
    assert schema["parameters"]["properties"]["discount_rate"]["maximum"] == 1
    result = await tool.run_json(
        {"initial_investment": 1000, "cash_flows": [500, 500, 500], "discount_rate": 0.1}, CancellationToken()
    )
    assert result["npv"] == pytest.approx(243.426, abs=1e-3)
    assert result["payback_years"] == pytest.approx(2.0)
    assert '"npv": 243.42' in tool.return_value_as_string(result)
    with pytest.raises(ToolInputError, match="financial_model: discount_rate"):
        await tool.run_json({"initial_investment": 1000, "cash_flows": [1], "discount_rate": 3}, CancellationToken())


async def test_assistant_agent_calls_the_tool() -> None:
    from autogen_agentchat.agents import AssistantAgent
    from autogen_agentchat.messages import ToolCallExecutionEvent
    from autogen_core import FunctionCall
    from autogen_core.models import CreateResult, ModelFamily, RequestUsage
    from autogen_ext.models.replay import ReplayChatCompletionClient

    arguments = '{"initial_investment": 1000, "cash_flows": [500, 500, 500], "discount_rate": 0.1}'
    client = ReplayChatCompletionClient(
        [
            CreateResult(
                finish_reason="function_calls",
                content=[FunctionCall(id="call-1", name="financial_model", arguments=arguments)],
                usage=RequestUsage(prompt_tokens=0, completion_tokens=0),
                cached=False,
            )
        ],
        model_info={
            "vision": False,
            "function_calling": True,
            "json_output": False,
            "family": ModelFamily.UNKNOWN,
            "structured_output": False,
        },
    )
    agent = AssistantAgent(
        "cfo", model_client=client, tools=[as_autogen_tool(name) for name in ("financial_model", "break_even")]
    )
    result = await agent.run(task="Should we invest 1000 for 500 a year over three years at 10%?")
    executions = [m for m in result.messages if isinstance(m, ToolCallExecutionEvent)]
    assert len(executions) == 1
    (call_result,) = executions[0].content
    assert call_result.name == "financial_model" and not call_result.is_error
    assert '"npv": 243.42' in call_result.content and '"payback_years": 2.0' in call_result.content


def test_irr_of_conventional_flows_matches_a_grid_search() -> None:
    """One sign change: bisection over the whole range must find the rate a fine scan brackets."""
    import random

    rng = random.Random(7)
    for _ in range(50):
        flows = [-rng.uniform(100, 5000)] + [rng.uniform(0, 3000) for _ in range(rng.randint(1, 10))]
        roots = irr_candidates(flows)
        rates = [-0.99 + i * 0.0005 for i in range(int(10.99 / 0.0005) + 1)]
        values = [net_present_value(r, flows) for r in rates]
        brackets = [
            (a, b) for a, b, fa, fb in zip(rates, rates[1:], values, values[1:]) if fa != 0 and (fa > 0) != (fb > 0)
        ]
        assert len(roots) == len(brackets) <= 1, flows
        for root, (a, b) in zip(roots, brackets):
            assert a <= root <= b and net_present_value(root, flows) == pytest.approx(0, abs=1e-6)
