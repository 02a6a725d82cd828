"""Template validation: a template that cannot run is rejected with file, field path and problem."""

from __future__ import annotations

import copy
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from convergio.agents.catalog import default_catalog
from convergio.graphflow.loader import (
    InputError,
    default_registry,
    load_template_file,
    parse_template,
    resolve_inputs,
)
from convergio.graphflow.placeholders import render_text, render_value
from convergio.graphflow.template import Template
from convergio.graphflow.validation import TemplateError
from convergio.tools.registry import tool_names

VALID: dict[str, Any] = {
    "name": "checked",
    "version": 1,
    "inputs": {"company": {"type": "string", "required": True}, "budget": {"type": "number", "default": 10}},
    "steps": [
        {"id": "research", "agent": "market_analyst", "instruction": "Research {inputs.company}. Cover: Market."},
        {"id": "model", "kind": "tool", "tool": "break_even",
         "arguments": {"fixed_costs": "{inputs.budget}", "price_per_unit": 10, "variable_cost_per_unit": 2}},
        {"id": "plan", "agent": "cfo", "depends_on": ["research", "model"],
         "when": "steps.research.status == 'completed'",
         "instruction": "Plan from {steps.research.output}. Cover: Plan."},
        {"id": "sign_off", "kind": "approval", "depends_on": ["plan"], "approvers": ["executive"]},
    ],
}


# A denied gate runs its on_denied path; a step that waits for that path AND for a step after
# the approval can never run (unless it joins with 'any').
GATE_PATHS: list[dict[str, Any]] = [
    {"id": "rework", "agent": "cfo", "depends_on": ["sign_off"], "instruction": "Rework the plan."},
    {"id": "wrap_up", "agent": "cfo", "depends_on": ["rework", "announce"], "instruction": "Wrap up."},
    {"id": "announce", "agent": "cfo", "depends_on": ["sign_off"], "instruction": "Announce the plan."},
]


def with_denial_path(data: dict[str, Any], join: str) -> dict[str, Any]:
    data["steps"][3]["on_denied"] = ["rework"]
    data["steps"].extend(copy.deepcopy(GATE_PATHS))
    data["steps"][5]["join"] = join
    return data


def with_two_gates_denying(data: dict[str, Any], target: str) -> dict[str, Any]:
    """Gates sign_off (steps[3]) and legal (steps[4]) both list ``target`` (steps[5]) in on_denied."""
    data["steps"][3]["on_denied"] = [target]
    data["steps"].append({"id": "legal", "kind": "approval", "depends_on": ["plan"], "approvers": ["legal"],
                          "on_denied": [target]})
    data["steps"].append({"id": target, "agent": "cfo", "depends_on": ["sign_off", "legal"],
                          "instruction": "Rework the plan."})
    return data


def write(tmp_path: Path, data: dict[str, Any] | str) -> Path:
    import yaml

    path = tmp_path / "custom.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def load(path: Path):  # noqa: ANN201
    return load_template_file(path, agents=default_catalog().names(), tools=tool_names())


def broken(change) -> dict[str, Any]:  # noqa: ANN001
    data = copy.deepcopy(VALID)
    change(data)
    return data


def test_shipped_templates_are_complete() -> None:
    registry = default_registry()
    assert registry.names() == ["market-entry", "product-launch", "strategic-analysis"]
    for template in registry.all():
        kinds = {step.kind for step in template.steps}
        assert {"agent", "approval"} <= kinds, template.name
        final = template.steps[-1]
        # An approval gate stands before the final step.
        assert any(template.step(d).kind == "approval" for d in final.depends_on), template.name
        assert any(step.sla for step in template.steps) and template.sla.total
        assert any(step.quality for step in template.steps)
        assert template.success_metrics
        assert {step.on_failure.action for step in template.steps} - {"fail"}
        # Parallel steps: at least two steps become ready at the same time.
        roots = [step.id for step in template.steps if not step.depends_on]
        assert len(roots) >= 2, template.name


def test_valid_template_loads(tmp_path: Path) -> None:
    template = load(write(tmp_path, VALID))
    assert template.key == "checked@1"
    assert template.step("plan").depends_on == ["research", "model"]


@pytest.mark.parametrize(
    ("change", "path", "problem"),
    [
        (lambda d: d["steps"][0].update(agent="ghost"), "steps[0].agent", "unknown agent 'ghost'"),
        (lambda d: d["steps"][2].update(quality={"reviewer": {"agent": "ghost"}}), "steps[2].quality.reviewer.agent",
         "unknown agent 'ghost'"),
        (lambda d: d["steps"][2].update(on_failure={"action": "fallback", "agent": "ghost"}),
         "steps[2].on_failure.agent", "unknown agent 'ghost'"),
        (lambda d: d["steps"][0].update(kind="team", agent=None, participants=["cfo", "ghost"]),
         "steps[0].participants[1]", "unknown agent 'ghost'"),
        (lambda d: d["inputs"]["budget"].update(default="lots"), "inputs.budget.default", "expected number, got str"),
        (lambda d: d["inputs"].update({"x" * 65: {"type": "string"}}), "inputs.xxxxx",
         "an input name has at most 64 characters"),
        (lambda d: d["steps"][0].update(instruction="Research {input.company}."), "steps[0].instruction",
         "'{input.company}' is not a placeholder"),
        (lambda d: d["steps"][0].update(instruction="Research {inputs.Company}."), "steps[0].instruction",
         "'{inputs.Company}' is not a placeholder"),
        (lambda d: d["steps"][2].update(instruction="Plan from {steps.research.outptu}."), "steps[2].instruction",
         "{steps.research.outptu} names no field of a step"),
        (lambda d: d["steps"][2].update(when="1 > 2"), "steps[2].when", "unreachable"),
        (lambda d: d["steps"][2].update(when="not true"), "steps[2].when", "unreachable"),
        (lambda d: d["steps"][2].update(loop={"back_to": "research", "while": "false", "max_iterations": 2}),
         "steps[2].loop.while", "the loop never repeats"),
        (lambda d: d.update(success_metrics=[{"name": "fast", "check": "run.speed > 1"}]),
         "success_metrics[0].check", "unknown run field 'speed'"),
        (lambda d: d["steps"][0].update(success_metrics=[{"name": "m", "check": "steps.nowhere.status == 'completed'"}]),
         "steps[0].success_metrics[0].check", "unknown step 'nowhere'"),
        (lambda d: d.update(success_metrics=[{"name": "m", "check": "eval('1')"}]), "success_metrics[0].check",
         "bad expression"),
        (lambda d: d["steps"][2].update(when="steps.research.outptu == 'x'"), "steps[2].when",
         "steps.research.outptu: a step has no field 'outptu'"),
        (lambda d: d.update(success_metrics=[{"name": "m", "check": "steps.plan.statsu != 'completed'"}]),
         "success_metrics[0].check", "steps.plan.statsu: a step has no field 'statsu'"),
        (lambda d: d["steps"][0].update(instruction="Research {company}."), "steps[0].instruction",
         "'{company}' is not a placeholder"),
        (lambda d: d["steps"][0].update(instruction="Research { inputs.company }."), "steps[0].instruction",
         "'{ inputs.company }' is not a placeholder"),
        (lambda d: d["steps"][0].update(instruction="Research {inputs.company and more."),
         "steps[0].instruction", "'{inputs.company' is not a placeholder"),
        (lambda d: d["steps"][0].update(instruction="Research {inputs.company.}."), "steps[0].instruction",
         "'{inputs.company.}' is not a placeholder"),
        (lambda d: d["steps"][0].update(instruction="Research {inputs.company}}."), "steps[0].instruction",
         "'{inputs.company}}' is not a placeholder"),
        (lambda d: d["steps"][1]["arguments"].update(fixed_cost=5), "steps[1].arguments.fixed_cost",
         "'break_even' has no argument 'fixed_cost'"),
        (lambda d: d["steps"][1]["arguments"].pop("price_per_unit"), "steps[1].arguments",
         "'break_even' needs the argument 'price_per_unit'"),
        (lambda d: with_denial_path(d, "all"), "steps[5].depends_on",
         "'wrap_up' can never run: it needs gate 'sign_off' both approved and denied"),
        (lambda d: d["steps"][2].update(depends_on=["research", "nowhere"]), "steps[2].depends_on[1]", "unknown step 'nowhere'"),
        (lambda d: d["steps"][0].update(depends_on=["plan"]), "steps[", "cycle without a bound"),
        (lambda d: d["steps"][0].update(instruction="About {inputs.colour}."), "steps[0].instruction", "unknown input 'colour'"),
        (lambda d: d["steps"][0].update(instruction="Use {steps.plan.output}."), "steps[0].instruction", "not upstream"),
        (lambda d: d["steps"][2].update(when="steps.research.output.upper()"), "steps[2].when", "bad expression"),
        (lambda d: d["steps"][2].update(when="__import__('os')"), "steps[2].when", "bad expression"),
        (lambda d: d["steps"][2].update(when="false"), "steps[2].when", "unreachable"),
        (lambda d: d["steps"][1].update(tool="rm_rf"), "steps[1].tool", "unknown tool 'rm_rf'"),
        (lambda d: d["steps"][1].update(on_failure={"action": "fallback", "agent": "cfo"}),
         "steps[1].on_failure.action", "a tool step has no agent to fall back from"),
        (lambda d: d["steps"][2].update(timeout="soon"), "steps[2].timeout", ""),
        (lambda d: d["steps"][2].update(loop={"back_to": "research", "while": "true"}), "steps[2].loop.max_iterations", "required"),
        (lambda d: d["steps"][3].update(approvers=[]), "steps[3]", "approvers"),
        (lambda d: d["steps"].append(dict(d["steps"][0])), "steps[4].id", "duplicate step id 'research'"),
        (lambda d: d.update(version=0), "version", "greater than or equal to 1"),
        (lambda d: d["steps"][0].update(surprise=True), "steps[0].surprise", "Extra inputs are not permitted"),
        # Durations: out of range (once a raw OverflowError, a 500 from the API), or not positive.
        (lambda d: d["steps"][2].update(timeout=1e300), "steps[2].timeout", "a duration is at most 3650d"),
        (lambda d: d["steps"][2].update(timeout=float("inf")), "steps[2].timeout",
         "a duration is at most 3650d"),
        (lambda d: d["steps"][2].update(timeout=10**400), "steps[2].timeout", "a duration is at most 3650d"),
        (lambda d: d["steps"][2].update(sla="99999999999d"), "steps[2].sla", "a duration is at most 3650d"),
        (lambda d: d["steps"][2].update(sla="P999999999D"), "steps[2].sla", "a duration is at most 3650d"),
        (lambda d: d["steps"][2].update(timeout=-5), "steps[2].timeout",
         "must be a positive duration, got -5s"),
        (lambda d: d["steps"][2].update(heartbeat_timeout=0), "steps[2].heartbeat_timeout",
         "must be a positive duration, got 0s"),
        (lambda d: d.update(sla={"total": "-P1D"}), "sla.total", "must be a positive duration, got -86400s"),
        (lambda d: d["steps"][2].update(retry={"initial_interval": "10m", "max_interval": "1s"}),
         "steps[2].retry", "initial_interval (600s) is longer than max_interval (1s)"),
        (lambda d: d["steps"][3].update(escalation=[{"action": "notify", "after": -60}]),
         "steps[3].escalation[0].after", "must not be negative, got -60s"),
        # Conditions that fail on every run, whatever the data.
        (lambda d: d["steps"][2].update(when="1/0 == 1"), "steps[2].when",
         "bad expression: it fails whatever the data: division by zero"),
        (lambda d: d["steps"][2].update(when='"a" < 1'), "steps[2].when",
         "bad expression: it fails whatever the data: cannot compare string and number"),
        (lambda d: d["steps"][2].update(when="len(1) > 0"), "steps[2].when",
         "bad expression: it fails whatever the data: len() needs a string, list or object"),
        (lambda d: d["steps"][2].update(loop={"back_to": "research", "while": '"a" * 2 > 1',
                                              "max_iterations": 2}),
         "steps[2].loop.while", "bad expression: it fails whatever the data: '*' needs numbers"),
        (lambda d: d.update(success_metrics=[{"name": "m", "check": "1/0 == 1"}]), "success_metrics[0].check",
         "bad expression: it fails whatever the data"),
        # A step follows the denial of one gate only.
        (lambda d: with_two_gates_denying(d, "rework"), "steps[4].on_denied[0]",
         "'rework' is already on the on_denied path of gate 'sign_off'"),
        (lambda d: d["steps"][3].update(on_denied=["plan", "plan"]), "steps[3].on_denied[1]",
         "'plan' is listed twice"),
        # Input names a placeholder can refer to.
        (lambda d: d["inputs"].update({"Company Name": {"type": "string"}}), "inputs.Company Name",
         "'Company Name' is not a valid input name"),
        (lambda d: d["inputs"].update({"my-input": {"type": "string"}}), "inputs.my-input",
         "'my-input' is not a valid input name"),
        (lambda d: d["inputs"].update({"2nd": {"type": "string"}}), "inputs.2nd",
         "'2nd' is not a valid input name"),
        # Placeholders opened or closed once too often, or naming no value.
        (lambda d: d["steps"][0].update(instruction="Research {{inputs.company}."), "steps[0].instruction",
         "'{{inputs.company}' is not a placeholder"),
        (lambda d: d["steps"][0].update(instruction="Research {inputs.company}}}."), "steps[0].instruction",
         "'{inputs.company}}}' is not a placeholder"),
        (lambda d: d["steps"][0].update(instruction="Research {inputs}."), "steps[0].instruction",
         "'{inputs}' is not a placeholder"),
        (lambda d: d["steps"][2].update(instruction="Plan from {steps}."), "steps[2].instruction",
         "'{steps}' is not a placeholder"),
        # Quality checks the workflow runs on agent and team answers only: elsewhere they were ignored.
        (lambda d: d["steps"][1].update(quality={"min_length": 50}), "steps[1].quality",
         "'quality' applies to agent and team steps only; the output of this tool step is never checked"),
        (lambda d: d["steps"][3].update(quality={"reviewer": {"agent": "reviewer"}}), "steps[3].quality",
         "'quality' applies to agent and team steps only; the output of this approval step is never checked"),
        # A loop whose bound counts only the first run never repeats.
        (lambda d: d["steps"][2].update(loop={"back_to": "research", "while": "true", "max_iterations": 1}),
         "steps[2].loop.max_iterations",
         "1 means the loop never repeats: max_iterations counts the first run too, so it must be at least 2"),
        # Literal tool arguments of the wrong type fail every run.
        (lambda d: d["steps"][1]["arguments"].update(price_per_unit="ten"),
         "steps[1].arguments.price_per_unit",
         "wrong type for 'break_even': Input should be a valid number, unable to parse string as a number "
         "(got 'ten')"),
        (lambda d: d["steps"][1]["arguments"].update(currency=978), "steps[1].arguments.currency",
         "wrong type for 'break_even': Input should be a valid string (got 978)"),
        (lambda d: d["steps"][1]["arguments"].update(variable_cost_per_unit=None),
         "steps[1].arguments.variable_cost_per_unit",
         "wrong type for 'break_even': Input should be a valid number (got None)"),
        (lambda d: d["steps"][1].update(tool="financial_model", arguments={
            "initial_investment": "{inputs.budget}", "cash_flows": [100, "lots"], "discount_rate": 0.1}),
         "steps[1].arguments.cash_flows[1]",
         "wrong type for 'financial_model': Input should be a valid number, unable to parse string as a "
         "number (got 'lots')"),
        (lambda d: d["steps"][1].update(tool="market_sizing", arguments={
            "total_companies": 10.5, "adoption_rate": "{inputs.budget}", "serviceable_share": 0.5,
            "annual_contract_value": "{inputs.budget}"}),
         "steps[1].arguments.total_companies",
         "wrong type for 'market_sizing': Input should be a valid integer, got a number with a fractional "
         "part (got 10.5)"),
    ],
)
def test_invalid_templates_name_file_field_and_problem(tmp_path: Path, change, path: str, problem: str) -> None:  # noqa: ANN001
    file = write(tmp_path, broken(change))
    with pytest.raises(TemplateError) as error:
        load(file)
    message = str(error.value)
    assert message.startswith(str(file))
    assert path in message and problem in message, message


def test_what_the_stricter_checks_still_accept(tmp_path: Path) -> None:
    """Literal braces, JSON in an instruction, a data field path, a condition that reads data,
    and a step joining the two paths of a gate with 'any'."""
    data = with_denial_path(copy.deepcopy(VALID), "any")
    data["steps"][0]["instruction"] = (
        'Research {inputs.company}; answer as {{"market": "..."}} or {"a": 1}; '
        "mark gaps {TBD}; see /api/{id}."
    )
    data["steps"][2]["instruction"] = "Plan from {steps.research.output} and {steps.model.data.break_even_units}."
    data["steps"][2]["when"] = "inputs.budget > 1 or true"
    template = load(write(tmp_path, data))
    assert template.step("wrap_up").join == "any"


def test_more_that_still_loads(tmp_path: Path) -> None:
    """Edges of the checks above: a condition that cannot fail (it short-circuits), equal retry
    intervals, an immediate escalation, input names with '_' and digits, a placeholder in escaped braces."""
    data = copy.deepcopy(VALID)
    data["inputs"]["_internal_2"] = {"type": "string", "default": "x"}
    data["steps"][2]["when"] = "true or 1/0 == 1"
    data["steps"][2]["retry"] = {"initial_interval": "30s", "max_interval": "30s"}
    data["steps"][3]["sla"] = "4h"  # a chain runs when the SLA passes (without one it is rejected)
    data["steps"][3]["escalation"] = [{"action": "notify", "after": 0}, {"action": "fail", "after": "1h"}]
    data["steps"][0]["instruction"] = "Research {inputs.company}, {inputs._internal_2}; {{inputs.company}}."
    template = load(write(tmp_path, data))
    assert template.step("plan").retry.initial_interval == timedelta(seconds=30)
    assert template.step("sign_off").escalation[0].after == timedelta(0)


def test_quality_loops_and_literal_arguments_used_rightly_still_load(tmp_path: Path) -> None:
    """Quality on agent and team steps, a loop of two runs, and tool arguments whose literals have
    the tool's types: placeholders (whole, or inside a list), numbers written as text (the tool
    reads "12.5" as 12.5 at run time too), and a value out of range, which is the run's to reject."""
    data = copy.deepcopy(VALID)
    data["steps"][0]["quality"] = {"required_sections": ["Market"], "min_length": 10}
    data["steps"][2].update(kind="team", agent=None, participants=["cfo", "strategic"],
                            quality={"reviewer": {"agent": "reviewer", "threshold": 6}},
                            loop={"back_to": "research", "while": "steps.plan.score < 8",
                                  "max_iterations": 2})
    data["steps"][1]["arguments"].update(price_per_unit="12.5", currency="USD")
    data["steps"].append({"id": "invest", "kind": "tool", "tool": "financial_model", "arguments": {
        "initial_investment": -5, "cash_flows": ["{inputs.budget}", 20], "discount_rate": 0}})
    template = load(write(tmp_path, data))
    assert template.step("plan").loop is not None and template.step("plan").loop.max_iterations == 2
    assert template.step("model").arguments["price_per_unit"] == "12.5"


def test_a_tool_validator_that_needs_the_run_time_arguments_does_not_break_the_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Literals are validated without the placeholder-valued arguments: a tool's validator reading
    one of those must not turn a valid template into an error (from the API: a 500)."""
    from pydantic import BaseModel, ValidationInfo, field_validator

    from convergio.tools import registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    class RangeInput(BaseModel):
        low: float
        high: float

        @field_validator("high")
        @classmethod
        def _above_low(cls, value: float, info: ValidationInfo) -> float:
            if value <= info.data["low"]:  # a KeyError when 'low' is left out
                raise ValueError("must be above low")
            return value

    class RangeOutput(BaseModel):
        summary: str

    @registry.register_tool("range_for_tests", "Echo a range.")
    def echo(params: RangeInput) -> RangeOutput:
        return RangeOutput(summary=f"{params.low}..{params.high}")

    data = broken(lambda d: d["steps"][1].update(tool="range_for_tests",
                                                 arguments={"low": "{inputs.budget}", "high": 5}))
    template = parse_template(data, agents=default_catalog().names(), tools=tool_names(), source="template")
    assert template.step("model").tool == "range_for_tests"


def test_a_yaml_date_is_a_string_argument_as_the_run_receives_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """YAML reads `due: 2025-01-31` as a date; the pinned template reaches the run as JSON, where
    it is the string the tool takes. The load-time type check must see it the same way."""
    from pydantic import BaseModel

    from convergio.tools import registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    class DueInput(BaseModel):
        due: str

    class DueOutput(BaseModel):
        summary: str

    @registry.register_tool("due_for_tests", "Echo a due date.")
    def echo(params: DueInput) -> DueOutput:
        return DueOutput(summary=params.due)

    text = write(tmp_path, broken(lambda d: d["steps"][1].update(tool="due_for_tests", arguments={})))
    text.write_text(text.read_text().replace("arguments: {}", "arguments: {due: 2025-01-31}"))
    assert "due: 2025-01-31" in text.read_text()
    template = load(text)
    assert str(template.step("model").arguments["due"]) == "2025-01-31"


def test_the_new_rules_apply_at_load_not_to_pinned_runs_or_stored_templates(tmp_path: Path) -> None:
    """Runs pin their template and the API's store re-reads templates with the model alone: a template
    valid before these rules must still decode there, and is refused only where a template loads."""
    data = broken(lambda d: (
        d["steps"][1].update(quality={"min_length": 5}),
        d["steps"][1]["arguments"].update(price_per_unit="ten"),
        d["steps"][2].update(loop={"back_to": "research", "while": "true", "max_iterations": 1}),
    ))
    pinned = Template.model_validate(data)
    assert Template.model_validate_json(pinned.model_dump_json()) == pinned
    with pytest.raises(TemplateError) as error:
        load(write(tmp_path, data))
    assert sorted(problem.path for problem in error.value.problems) == [
        "steps[1].arguments.price_per_unit", "steps[1].quality", "steps[2].loop.max_iterations",
    ]


# Three levels of a "billion laughs": nine more levels make a billion strings once dumped or validated.
LAUGHS = (
    "name: laughs\nversion: 1\n"
    "x: &a [lol, lol, lol]\n"
    "y: &b [*a, *a, *a]\n"
    "steps:\n  - id: research\n    agent: cfo\n    instruction: Research.\n"
    "    kind: tool\n    tool: break_even\n    arguments: {fixed_costs: [*b, *b, *b]}\n"
)


def test_yaml_anchors_and_aliases_are_refused_naming_file_and_line(tmp_path: Path) -> None:
    """No shipped template or agent uses them, and nested aliases expand without bound."""
    file = write(tmp_path, LAUGHS)
    with pytest.raises(TemplateError) as error:
        load(file)
    assert str(error.value) == (
        f"{file}: line 3: invalid YAML: found &a: anchors (&) and aliases (*) are not allowed; "
        "write the value out"
    )
    file = write(tmp_path, "name: alias\nversion: 1\nsteps:\n  - {id: a, agent: cfo, instruction: *text}\n")
    with pytest.raises(TemplateError, match=r"line 4: invalid YAML: found \*text: anchors \(&\) and aliases"):
        load(file)
    # '&' and '*' inside text are no YAML syntax.
    file = write(tmp_path, "name: text\nversion: 1\nsteps:\n  - id: a\n    agent: cfo\n"
                           "    instruction: R&D, *all* of it & '*this*'\n")
    assert load(file).steps[0].instruction == "R&D, *all* of it & '*this*'"


def test_agent_definition_files_refuse_yaml_aliases_too(tmp_path: Path) -> None:
    """Agent definitions are read with the same loader as templates (YAML files and front matter)."""
    from convergio.agents.catalog import AgentCatalogError, load_definition_file

    (tmp_path / "cfo.yaml").write_text("name: cfo\nrole: &role CFO\nsystem_message: *role\n")
    (tmp_path / "reviewer.md").write_text("---\nname: reviewer\nrole: Reviewer\ndomains: *all\n---\nHi.\n")
    with pytest.raises(AgentCatalogError) as error:
        load_definition_file(tmp_path / "cfo.yaml")
    assert "cfo.yaml:2: invalid YAML: found &role: anchors (&) and aliases (*)" in str(error.value)
    with pytest.raises(AgentCatalogError) as error:
        load_definition_file(tmp_path / "reviewer.md")
    assert "reviewer.md:4: invalid YAML: found *all: anchors (&) and aliases (*)" in str(error.value)


def test_long_durations_survive_the_json_round_trip(tmp_path: Path) -> None:
    """The template travels to the workflow as JSON: '12d' was written '1.0368e+06s', which did not
    parse back."""
    data = copy.deepcopy(VALID)
    data["sla"] = {"total": "3650d"}
    data["steps"][2].update(sla="12d", timeout="1234567.25s", heartbeat_timeout="1.5ms")
    template = load(write(tmp_path, data))
    dumped = template.model_dump(mode="json")
    assert dumped["steps"][2]["sla"] == "1036800s" and dumped["steps"][2]["timeout"] == "1234567.25s"
    assert dumped["steps"][2]["heartbeat_timeout"] == "0.0015s"
    assert Template.model_validate_json(template.model_dump_json()) == template


def test_runs_already_started_still_decode_their_pinned_template(tmp_path: Path) -> None:
    """Signs are checked when a template loads, not by the model that decodes a started run's input."""
    data = broken(lambda d: d["steps"][2].update(heartbeat_timeout=0, retry={"initial_interval": "2m"}))
    assert Template.model_validate(data).step("plan").heartbeat_timeout == timedelta(0)
    with pytest.raises(TemplateError) as error:
        load(write(tmp_path, data))
    assert [str(problem) for problem in error.value.problems] == [
        "steps[2].heartbeat_timeout: must be a positive duration, got 0s",
        "steps[2].retry: initial_interval (120s) is longer than max_interval (60s)",
    ]


def test_a_duplicate_key_is_rejected_naming_file_key_and_line(tmp_path: Path) -> None:
    """safe_load kept the last of two keys: here the step would silently have run with 'cfo'."""
    file = write(tmp_path, (
        "name: dup\nversion: 1\nsteps:\n"
        "  - id: research\n    agent: market_analyst\n    instruction: Research.\n    agent: cfo\n"
    ))
    with pytest.raises(TemplateError) as error:
        load(file)
    message = str(error.value)
    assert message.startswith(str(file)), message
    assert "line 7" in message and "duplicate key 'agent' (first on line 5)" in message, message


def test_an_overflowing_duration_from_the_api_is_a_template_error() -> None:
    """The API validates JSON bodies with parse_template: a float that overflows timedelta
    must come back as a field problem (HTTP 422), not an OverflowError (HTTP 500)."""
    data = broken(lambda d: d["steps"][0].update(sla=1.7e308))
    with pytest.raises(TemplateError) as error:
        parse_template(data, agents=default_catalog().names(), tools=tool_names(), source="template")
    assert [str(problem) for problem in error.value.problems] == [
        "steps[0].sla: Value error, a duration is at most 3650d (10 years)"
    ]


@pytest.mark.parametrize(
    ("text", "context", "expected"),
    [
        ("Data: {inputs.obj}", {"inputs": {"obj": {"a": {"b": 1}}}}, 'Data: {"a": {"b": 1}}'),
        ("For {inputs.company}.", {"inputs": {"company": "ACME {{x}} }}"}}, "For ACME {{x}} }}."),
        ("{steps.plan.output}", {"steps": {"plan": {"output": "}}{{"}}}, "}}{{"),
        # The template's own escapes are still literal braces, next to a value or not.
        ('As {{"a": {inputs.n} }}, not {{inputs.n}}', {"inputs": {"n": "{{1}}"}},
         'As {"a": {{1}} }, not {inputs.n}'),
    ],
)
def test_rendering_fills_values_verbatim(text: str, context: dict[str, Any], expected: str) -> None:
    """Unescaping ran over the filled-in text too, so a value's own '{{' or '}}' lost a brace."""
    assert render_text(text, context) == expected
    assert render_value({"arg": text}, context) == {"arg": expected}


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    file = write(tmp_path, "name: x\nversion: 1\nsteps: [\n  - id: a\n")
    with pytest.raises(TemplateError) as error:
        load(file)
    assert str(file) in str(error.value) and "line" in str(error.value) and "invalid YAML" in str(error.value)


def test_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TemplateError) as error:
        load(tmp_path / "missing.yaml")
    assert "cannot read" in str(error.value)


def test_inputs_get_defaults_and_bad_inputs_are_rejected_together(tmp_path: Path) -> None:
    template = load(write(tmp_path, VALID))
    assert resolve_inputs(template, {"company": "Acme"}) == {"company": "Acme", "budget": 10}
    with pytest.raises(InputError) as error:
        resolve_inputs(template, {"budget": "lots", "extra": 1})
    message = str(error.value)
    for part in ("inputs.company: required", "inputs.budget: expected number", "inputs.extra: not an input"):
        assert part in message


def test_booleans_are_not_numbers(tmp_path: Path) -> None:
    template = load(write(tmp_path, VALID))
    with pytest.raises(InputError):
        resolve_inputs(template, {"company": "Acme", "budget": True})


def test_a_duration_pinned_in_exponent_form_still_decodes() -> None:
    """Runs pinned before durations were written as exact seconds hold "1.0368e+06s" (12 days);
    it did not parse, so such a run failed every workflow task."""
    from datetime import timedelta

    from pydantic import TypeAdapter

    from convergio.graphflow.template import Duration

    assert TypeAdapter(Duration).validate_python("1.0368e+06s") == timedelta(days=12)
    assert TypeAdapter(Duration).validate_python("2.5E+01m") == timedelta(minutes=25)
