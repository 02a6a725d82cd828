"""Financial tools: investment appraisal (NPV, IRR, payback), market sizing and break-even.

Pure, deterministic Python (no numpy). Cash flows are yearly; period ``t`` (1-based) is
discounted by ``(1 + rate) ** t`` and the initial investment is made at ``t = 0``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from convergio.tools.registry import register_tool

__all__ = [
    "BreakEvenInput",
    "BreakEvenOutput",
    "FinancialModelInput",
    "FinancialModelOutput",
    "MarketSizingInput",
    "MarketSizingOutput",
    "break_even",
    "discounted_payback_period",
    "financial_model",
    "internal_rate_of_return",
    "market_sizing",
    "net_present_value",
    "payback_period",
]

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code, e.g. 'EUR'.")]

# IRR search interval, and the bisection tolerance of the one-sign-change case.
IRR_LOW = -0.99
IRR_HIGH = 10.0
_IRR_TOLERANCE = 1e-12


# --- pure functions ----------------------------------------------------------------------------


def net_present_value(rate: float, flows: Sequence[float]) -> float:
    """NPV of ``flows`` where ``flows[0]`` is at t=0 (undiscounted) and ``flows[t]`` at year t."""
    if rate <= -1.0:
        raise ValueError("rate must be greater than -1")
    factor = 1.0 / (1.0 + rate)
    discount = 1.0
    total = 0.0
    for flow in flows:
        total += flow * discount
        discount *= factor
    return total


def _sign_changes(flows: Sequence[float]) -> int:
    signs = [flow > 0 for flow in flows if flow != 0]
    return sum(1 for a, b in zip(signs, signs[1:]) if a != b)


def _bisect(flows: Sequence[float], low: float, high: float, f_low: float) -> float:
    """Root of NPV(r) in [low, high], where NPV(low) and NPV(high) have opposite signs."""
    for _ in range(200):
        mid = (low + high) / 2.0
        f_mid = net_present_value(mid, flows)
        if f_mid == 0.0 or (high - low) / 2.0 < _IRR_TOLERANCE:
            return mid
        if (f_mid > 0) == (f_low > 0):
            low, f_low = mid, f_mid
        else:
            high = mid
    return (low + high) / 2.0


def _horner(coeffs: Sequence[float], x: float) -> float:
    """``sum(coeffs[t] * x**t)``."""
    total = 0.0
    for c in reversed(coeffs):
        total = total * x + c
    return total


def _rounding_bound(coeffs: Sequence[float], x: float) -> float:
    """How far :func:`_horner` may be from the exact value at ``x`` (x > 0): a value this small is
    indistinguishable from zero, so a polynomial touching zero there is taken to touch it."""
    return 4 * len(coeffs) * sys.float_info.epsilon * _horner([abs(c) for c in coeffs], x)


def _bisect_polynomial(coeffs: Sequence[float], a: float, b: float, a_positive: bool) -> float:
    """The root of the polynomial in [a, b], whose ends have opposite signs, to the last bit."""
    for _ in range(200):  # ends when the midpoint is an end: ~60 halvings within (0, 100]
        mid = (a + b) / 2.0
        if mid <= a or mid >= b:
            break
        value = _horner(coeffs, mid)
        if value == 0.0:
            return mid
        if (value > 0) == a_positive:
            a = mid
        else:
            b = mid
    return (a + b) / 2.0


def _polynomial_roots(coeffs: Sequence[float], lo: float, hi: float) -> list[float]:
    """Real roots of ``sum(coeffs[t] * x**t)`` in [lo, hi] (0 < lo < hi), ascending; a multiple
    root once.

    Between consecutive roots of the derivative (found the same way) the polynomial is monotone,
    so each piece holds at most one root: a sign change, bisected, or a point where the polynomial
    touches zero without crossing it, which is itself a root of the derivative. Unlike sampling,
    this misses neither two roots closer than a sample step nor a double root. By Descartes' rule
    of signs, coefficients that change sign at most once have at most one positive root, a simple
    one, so the recursion stops there (at once for conventional cash flows).
    """
    coeffs = list(coeffs)
    while coeffs and coeffs[-1] == 0:
        coeffs.pop()
    if len(coeffs) < 2:
        return []
    scale = max(abs(c) for c in coeffs)
    coeffs = [c / scale for c in coeffs]  # roots unchanged; derivatives of degree 50 cannot overflow
    changes = _sign_changes(coeffs)
    if changes == 0:
        return []
    critical = [] if changes == 1 else _polynomial_roots([t * c for t, c in enumerate(coeffs)][1:], lo, hi)
    points = [lo, *(x for x in critical if lo < x < hi), hi]
    signs: list[int] = []
    for x in points:
        value = _horner(coeffs, x)
        signs.append(0 if abs(value) <= _rounding_bound(coeffs, x) else 1 if value > 0 else -1)
    roots: list[float] = []
    for i, x in enumerate(points):
        if signs[i] == 0:
            roots.append(x)
        if i + 1 < len(points) and signs[i] * signs[i + 1] < 0:
            roots.append(_bisect_polynomial(coeffs, x, points[i + 1], signs[i] > 0))
    return roots


def irr_candidates(flows: Sequence[float], low: float = IRR_LOW, high: float = IRR_HIGH) -> list[float]:
    """Every rate in [low, high] where NPV is zero, ascending; a multiple root once.

    Flows that change sign once (an investment, then returns) have exactly one rate above -100%
    (Descartes' rule of signs), a simple root: bisecting [low, high] finds it. Otherwise NPV is the
    polynomial ``sum(flows[t] * x**t)`` in ``x = 1 / (1 + r)``, whose roots are all found, including
    two rates closer than any sampling step and a rate where NPV touches zero without changing sign
    (``[-1, 2, -1]`` is ``-(1 - x)**2``: a double root at 0%).
    """
    changes = _sign_changes(flows)
    if changes == 0:
        return []
    if changes == 1:
        f_low, f_high = net_present_value(low, flows), net_present_value(high, flows)
        if f_low == 0.0 or f_high == 0.0:
            return [low] if f_low == 0.0 else [high]
        if math.isfinite(f_low) and math.isfinite(f_high) and (f_low > 0) != (f_high > 0):
            return [_bisect(flows, low, high, f_low)]
        return []
    x_low, x_high = 1.0 / (1.0 + high), 1.0 / (1.0 + low)  # r ascending is x descending
    rates: list[float] = []
    for x in reversed(_polynomial_roots(flows, x_low, x_high)):
        rate = low if x == x_high else high if x == x_low else 1.0 / x - 1.0
        rates.append(min(max(rate, low), high))
    return rates


def internal_rate_of_return(flows: Sequence[float]) -> float | None:
    """The IRR of ``flows`` (``flows[0]`` at t=0), or None.

    None when the flows never change sign or no root lies in (-99%, 1000%]. When the flows
    change sign more than once and several rates qualify, the one closest to 0 is returned.
    """
    return _reported_rate(irr_candidates(flows))


def _reported_rate(roots: list[float]) -> float | None:
    """Of several rates, the one closest to 0%."""
    return min(roots, key=lambda r: (abs(r), r)) if roots else None


def _payback(initial_investment: float, inflows: Sequence[float]) -> float | None:
    """Fractional years until the cumulative ``inflows`` cover the investment for good: a
    project that earns it back and then falls behind again has not paid back by then."""
    remaining = initial_investment
    payback = 0.0 if remaining <= 0 else None
    for year, flow in enumerate(inflows, start=1):
        if remaining > 0 and flow >= remaining:
            payback = year - 1 + remaining / flow
        remaining -= flow
        if remaining > 0:
            payback = None
    return payback


def payback_period(initial_investment: float, cash_flows: Sequence[float]) -> float | None:
    """Years (fractional, flows spread evenly within a year) until the undiscounted cash flows
    first recover the investment; None if they never do within the horizon."""
    return _payback(initial_investment, cash_flows)


def discounted_payback_period(
    initial_investment: float, cash_flows: Sequence[float], discount_rate: float
) -> float | None:
    """Like :func:`payback_period`, on cash flows discounted at ``discount_rate``."""
    factor = 1.0 / (1.0 + discount_rate)
    discounted = [flow * factor**t for t, flow in enumerate(cash_flows, start=1)]
    return _payback(initial_investment, discounted)


# --- financial_model -----------------------------------------------------------------------------


class FinancialModelInput(BaseModel):
    """An investment appraised on yearly cash flows."""

    model_config = ConfigDict(extra="forbid")

    initial_investment: FiniteFloat = Field(gt=0, description="Cash spent at t=0, a positive amount.")
    cash_flows: list[FiniteFloat] = Field(
        min_length=1,
        max_length=50,
        description="Net cash flow of each year after the investment (year 1 first); 1 to 50 years.",
    )
    discount_rate: FiniteFloat = Field(
        gt=-1, le=1, description="Yearly discount rate as a fraction, e.g. 0.1 for 10%; in (-1, 1]."
    )
    currency: Currency = "EUR"


class FinancialModelOutput(BaseModel):
    npv: float = Field(description="Net present value at the discount rate.")
    irr: float | None = Field(description="Internal rate of return as a fraction; None if none exists.")
    payback_years: float | None = Field(description="Undiscounted payback in years; None if never paid back.")
    discounted_payback_years: float | None = Field(
        description="Payback of the discounted cash flows in years; None if never paid back."
    )
    profitability_index: float = Field(description="Present value of the cash flows / initial investment.")
    summary: str


def _money(amount: float, currency: str) -> str:
    return f"{currency} {amount:,.2f}"


def _years(value: float | None) -> str:
    return "never within the horizon" if value is None else f"{value:.2f} years"


@register_tool(
    "financial_model",
    "Appraise an investment from its initial outlay and yearly cash flows: NPV at a discount "
    "rate, IRR, simple and discounted payback (years) and profitability index.",
)
def financial_model(params: FinancialModelInput) -> FinancialModelOutput:
    flows = [-params.initial_investment, *params.cash_flows]
    npv = net_present_value(params.discount_rate, flows)
    rates = irr_candidates(flows)  # finding them is the costly part: once per call
    irr = _reported_rate(rates)
    payback = payback_period(params.initial_investment, params.cash_flows)
    discounted = discounted_payback_period(params.initial_investment, params.cash_flows, params.discount_rate)
    index = (npv + params.initial_investment) / params.initial_investment

    n = len(params.cash_flows)
    verdict = "creates value (NPV > 0)" if npv > 0 else "destroys value (NPV < 0)" if npv < 0 else "breaks even"
    irr_text = "no IRR (the cash flows never change sign or no rate in -99%..1000% zeroes the NPV)"
    if irr is not None:
        irr_text = f"IRR {irr:.2%}"
        if len(rates) > 1:
            irr_text += " (several IRRs exist; the one closest to 0% is reported)"
    summary = (
        f"Investment of {_money(params.initial_investment, params.currency)} over {n} "
        f"year{'s' if n != 1 else ''} at a {params.discount_rate:.2%} discount rate: "
        f"NPV {_money(npv, params.currency)}, so the project {verdict}; {irr_text}; "
        f"payback {_years(payback)}, discounted payback {_years(discounted)}; "
        f"profitability index {index:.2f}."
    )
    return FinancialModelOutput(
        npv=npv,
        irr=irr,
        payback_years=payback,
        discounted_payback_years=discounted,
        profitability_index=index,
        summary=summary,
    )


# --- market_sizing -------------------------------------------------------------------------------


class MarketSizingInput(BaseModel):
    """A bottom-up B2B market: companies × yearly contract value, narrowed twice."""

    model_config = ConfigDict(extra="forbid")

    total_companies: int = Field(gt=0, description="Companies that could ever use the offer (the whole market).")
    adoption_rate: FiniteFloat = Field(
        ge=0, le=1, description="Share of the serviceable market realistically won, as a fraction."
    )
    annual_contract_value: FiniteFloat = Field(gt=0, description="Average yearly revenue per customer.")
    serviceable_share: FiniteFloat = Field(
        ge=0, le=1, description="Share of the companies the offer can serve (region, segment, channel)."
    )
    currency: Currency = "EUR"


class MarketSizingOutput(BaseModel):
    tam: float = Field(description="Total addressable market per year: total_companies × annual_contract_value.")
    sam: float = Field(description="Serviceable available market per year: TAM × serviceable_share.")
    som: float = Field(description="Serviceable obtainable market per year: SAM × adoption_rate.")
    serviceable_companies: float = Field(description="total_companies × serviceable_share.")
    customers: float = Field(description="Customers implied by the SOM: serviceable companies × adoption_rate.")
    summary: str


@register_tool(
    "market_sizing",
    "Bottom-up market size: TAM (all companies × annual contract value), SAM (the serviceable "
    "share of it) and SOM (the adoption rate of the SAM), per year.",
)
def market_sizing(params: MarketSizingInput) -> MarketSizingOutput:
    tam = params.total_companies * params.annual_contract_value
    sam = tam * params.serviceable_share
    som = sam * params.adoption_rate
    serviceable = params.total_companies * params.serviceable_share
    customers = serviceable * params.adoption_rate
    c = params.currency
    summary = (
        f"TAM {_money(tam, c)}/year ({params.total_companies:,} companies × {_money(params.annual_contract_value, c)}); "
        f"SAM {_money(sam, c)}/year ({params.serviceable_share:.1%} serviceable, {serviceable:,.0f} companies); "
        f"SOM {_money(som, c)}/year ({params.adoption_rate:.1%} adoption, about {customers:,.0f} customers)."
    )
    return MarketSizingOutput(
        tam=tam, sam=sam, som=som, serviceable_companies=serviceable, customers=customers, summary=summary
    )


# --- break_even ----------------------------------------------------------------------------------


class BreakEvenInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fixed_costs: FiniteFloat = Field(ge=0, description="Fixed costs of the period.")
    price_per_unit: FiniteFloat = Field(gt=0, description="Net selling price of one unit.")
    variable_cost_per_unit: FiniteFloat = Field(
        ge=0, description="Variable cost of one unit; must be below price_per_unit."
    )
    currency: Currency = "EUR"

    @field_validator("variable_cost_per_unit")
    @classmethod
    def _below_price(cls, value: float, info: ValidationInfo) -> float:
        price = info.data.get("price_per_unit")
        if price is not None and value >= price:
            raise ValueError(
                f"must be below price_per_unit ({price}): with no positive contribution margin "
                "the business never breaks even"
            )
        return value


class BreakEvenOutput(BaseModel):
    contribution_margin_per_unit: float
    contribution_margin_ratio: float = Field(description="Contribution margin / price, a fraction.")
    break_even_units: float = Field(description="Exact units to cover fixed costs (fractional).")
    break_even_units_whole: int = Field(description="Whole units to sell: break_even_units rounded up.")
    break_even_revenue: float = Field(description="Revenue at break_even_units.")
    summary: str


@register_tool(
    "break_even",
    "Break-even point: units and revenue needed to cover fixed costs given price and variable "
    "cost per unit.",
)
def break_even(params: BreakEvenInput) -> BreakEvenOutput:
    margin = params.price_per_unit - params.variable_cost_per_unit
    units = params.fixed_costs / margin
    whole = math.ceil(round(units, 9))
    revenue = units * params.price_per_unit
    c = params.currency
    summary = (
        f"Each unit contributes {_money(margin, c)} ({margin / params.price_per_unit:.1%} of price); "
        f"covering fixed costs of {_money(params.fixed_costs, c)} takes {units:,.2f} units "
        f"({whole:,} whole units), i.e. revenue of {_money(revenue, c)}."
    )
    return BreakEvenOutput(
        contribution_margin_per_unit=margin,
        contribution_margin_ratio=margin / params.price_per_unit,
        break_even_units=units,
        break_even_units_whole=whole,
        break_even_revenue=revenue,
        summary=summary,
    )
