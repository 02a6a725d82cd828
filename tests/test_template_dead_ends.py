"""Templates that load but could never work as written are rejected when they load: a gate no
role can decide, an escalation chain without the SLA that starts it, a condition that is false
whenever it is read, a boolean where a duration belongs, a field the step's kind never reads, a
condition whose types can never match, and (no rule, a limit) long chains of steps, which are
checked without recursion."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from convergio.agents.catalog import default_catalog
from convergio.graphflow.loader import default_registry, load_template_file, parse_template
from convergio.graphflow.validation import TemplateError
from convergio.tools.registry import tool_names


def load(data: dict[str, Any]) -> None:
    parse_template(data, agents=default_catalog().names(), tools=tool_names(), source="custom.yaml")


def changed(base: dict[str, Any], change: Any) -> dict[str, Any]:
    """A copy of ``base`` with ``change`` (a function editing it in place) applied."""
    data = copy.deepcopy(base)
    change(data)
    return data


def test_shipped_templates_still_load() -> None:
    default_registry.cache_clear()
    assert default_registry().names()



# ------------------------------------------------------------ gates no role can decide
ROLES: dict[str, Any] = {
    "name": "roles",
    "version": 1,
    "steps": [
        {"id": "plan", "agent": "cfo", "instruction": "Plan."},
        {"id": "sign_off", "kind": "approval", "depends_on": ["plan"], "approvers": ["executive"],
         "sla": "1h",
         "escalation": [{"action": "reassign", "to": ["ceo"]}]},
    ],
}



@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda d: d.update(budget={"on_breach": "approval", "approvers": []}), "budget.approvers"),
        (lambda d: d.update(security={"on_flag": "approval", "approvers": []}), "security.approvers"),
        (lambda d: d.update(security={"on_flag": "redact", "on_block": "approval", "approvers": []}),
         "security.approvers"),
        (lambda d: d["steps"][1].update(approvers=[""]), "steps[1].approvers[0]"),
        (lambda d: d["steps"][1].update(approvers=["  "]), "steps[1].approvers[0]"),
        (lambda d: d["steps"][1].update(approvers=["x" * 101]), "steps[1].approvers[0]"),
        (lambda d: d["steps"][0].update(requires_approval=True, approvers=[""]), "steps[0].approvers[0]"),
        (lambda d: d["steps"][1]["escalation"][0].update(to=[""]), "steps[1].escalation[0].to[0]"),
        (lambda d: d.update(budget={"on_breach": "approval", "approvers": ["finance", ""]}),
         "budget.approvers[1]"),
    ],
)
def test_a_gate_no_role_can_decide_is_rejected(change, path: str) -> None:  # noqa: ANN001
    with pytest.raises(TemplateError) as error:
        load(changed(ROLES, change))
    assert f"custom.yaml: {path}: " in str(error.value)


@pytest.mark.parametrize(
    "change",
    [
        lambda d: None,
        lambda d: d.update(budget={"on_breach": "stop", "approvers": []}),  # never asks a person
        lambda d: d.update(security={"on_flag": "redact", "on_block": "block", "approvers": []}),
        lambda d: d["steps"][0].update(requires_approval=True),  # the default role decides
        lambda d: d["steps"][0].update(on_failure={"action": "escalate"}),
    ],
)
def test_gates_with_a_role_still_load(change) -> None:  # noqa: ANN001
    load(changed(ROLES, change))



# ------------------------------------------------------------ escalation chains without their SLA
CHAINS: dict[str, Any] = {
    "name": "chains",
    "version": 1,
    "steps": [
        {"id": "plan", "agent": "cfo", "instruction": "Plan."},
        {"id": "sign_off", "kind": "approval", "depends_on": ["plan"], "approvers": ["executive"]},
    ],
}



@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda d: d["steps"][0].update(escalation=[{"action": "fail", "after": "1h"}]),
         "steps[0].escalation"),
        (lambda d: d["steps"][1].update(escalation=[{"action": "auto_decide", "decision": "deny"}]),
         "steps[1].escalation"),
        (lambda d: d.update(sla={"escalation": [{"action": "fail"}]}), "sla.escalation"),
    ],
)
def test_a_chain_without_its_sla_is_rejected(change, path: str) -> None:  # noqa: ANN001
    with pytest.raises(TemplateError) as error:
        load(changed(CHAINS, change))
    assert f"custom.yaml: {path}: " in str(error.value)
    assert "would never run" in str(error.value)


@pytest.mark.parametrize(
    "change",
    [
        lambda d: None,
        lambda d: d["steps"][1].update(sla="4h", escalation=[{"action": "auto_decide", "decision": "deny"}]),
        lambda d: d["steps"][0].update(escalation=[]),  # nothing to run
        lambda d: d.update(sla={"total": "2d", "escalation": [{"action": "fail"}]}),
        lambda d: d.update(sla={"escalation": []}),
    ],
)
def test_chains_that_can_run_still_load(change) -> None:  # noqa: ANN001
    load(changed(CHAINS, change))



# ------------------------------------------------------------ conditions false whenever they are read
CONDITIONS: dict[str, Any] = {
    "name": "conditions",
    "version": 1,
    "inputs": {"budget": {"type": "number", "default": 10}},
    "steps": [
        {"id": "plan", "agent": "cfo", "instruction": "Plan."},
        {"id": "sign_off", "kind": "approval", "depends_on": ["plan"], "approvers": ["executive"]},
        {"id": "next", "agent": "cfo", "depends_on": ["sign_off"], "instruction": "Go on."},
    ],
}



@pytest.mark.parametrize(
    "when",
    [
        'steps.sign_off.status == "denied"',  # a denied gate skips 'next' before its condition is read
        'steps.sign_off.status == "complete"',  # a misspelt status
        'steps.sign_off.status != "completed"',
        'steps.sign_off.status in ["skipped", "failed"]',
        'steps.sign_off.status == "denied" and inputs.budget > 5',
    ],
)
def test_a_condition_false_once_the_dependencies_completed_is_rejected(when: str) -> None:
    data = copy.deepcopy(CONDITIONS)
    data["steps"][2]["when"] = when
    with pytest.raises(TemplateError) as error:
        load(data)
    assert "custom.yaml: steps[2].when: step 'next' is unreachable" in str(error.value)
    assert "sign_off completed" in str(error.value)


def test_an_on_denied_step_is_checked_with_its_gate_denied() -> None:
    data = copy.deepcopy(CONDITIONS)
    data["steps"][1]["on_denied"] = ["next"]
    data["steps"][2]["when"] = 'steps.sign_off.status == "completed"'
    with pytest.raises(TemplateError, match="sign_off denied"):
        load(data)
    data["steps"][2]["when"] = 'steps.sign_off.status == "denied"'
    load(data)


@pytest.mark.parametrize(
    ("when", "join"),
    [
        ('steps.sign_off.status == "completed"', "all"),
        ('steps.sign_off.status == "denied" or inputs.budget > 5', "all"),
        ('steps.plan.output != null', "all"),
        ('steps.sign_off.status == "denied"', "any"),  # with join: any nothing is known
    ],
)
def test_conditions_that_can_hold_still_load(when: str, join: str) -> None:
    data = copy.deepcopy(CONDITIONS)
    data["steps"][2].update(when=when, join=join, depends_on=["plan", "sign_off"])
    load(data)



# ------------------------------------------------------------ booleans are no durations
DURATION_TEMPLATE = """\
name: durations
version: 1
steps:
  - id: plan
    agent: cfo
    instruction: Plan.
    {field}: {value}
"""


@pytest.mark.parametrize("field", ["timeout", "heartbeat_timeout", "sla"])
@pytest.mark.parametrize("value", ["true", "yes", "on", "false"])
def test_a_boolean_is_not_a_duration(tmp_path: Path, field: str, value: str) -> None:
    path = tmp_path / "custom.yaml"
    path.write_text(DURATION_TEMPLATE.format(field=field, value=value))
    with pytest.raises(TemplateError) as error:
        load_template_file(path, agents=default_catalog().names(), tools=tool_names())
    assert f"custom.yaml: steps[0].{field}: " in str(error.value)
    assert "a duration must be a number of seconds" in str(error.value)


@pytest.mark.parametrize("value", ["1", "1.5", "30s", "PT5M"])
def test_numbers_and_texts_still_are(tmp_path: Path, value: str) -> None:
    path = tmp_path / "custom.yaml"
    path.write_text(DURATION_TEMPLATE.format(field="timeout", value=value))
    load_template_file(path, agents=default_catalog().names(), tools=tool_names())



# ------------------------------------------------------------ long chains
LENGTH = 1_100  # beyond Python's default recursion limit (1000)



def chain(length: int) -> list[dict[str, Any]]:
    """s0 <- s1 <- ... listed last step first, so a depth-first walk goes the whole way down."""
    steps = [{"id": f"s{i}", "agent": "cfo", "instruction": "Go on.",
              "depends_on": [f"s{i - 1}"] if i else []}
             for i in range(length)]
    return steps[::-1]


def load_chain(steps: list[dict[str, Any]]) -> None:
    load({"name": "chain", "version": 1, "steps": steps})


def test_a_long_chain_loads() -> None:
    load_chain(chain(LENGTH))


def test_a_long_chain_with_a_gate_and_its_denial_path_loads() -> None:
    steps = chain(LENGTH)
    steps[-2]["depends_on"] = ["gate"]  # s1 now waits for the gate's approval
    steps.append({"id": "gate", "kind": "approval", "approvers": ["executive"], "depends_on": ["s0"],
                  "on_denied": ["rework"]})
    steps.append({"id": "rework", "agent": "cfo", "instruction": "Rework.", "depends_on": ["gate"]})
    load_chain(steps)
    steps.append({"id": "both", "agent": "cfo", "instruction": "x",
                  "depends_on": ["rework", f"s{LENGTH - 1}"]})
    with pytest.raises(TemplateError, match="step 'both' can never run"):
        load_chain(steps)


def test_a_cycle_at_the_end_of_a_long_chain_is_reported() -> None:
    steps = chain(LENGTH)
    steps[-1]["depends_on"] = [f"s{LENGTH - 1}"]  # s0 waits for the last step
    cycle = rf"steps\[{LENGTH - 1}\].depends_on: cycle without a bound: s{LENGTH - 1} -> s0 -> s1 -> "
    with pytest.raises(TemplateError, match=cycle):
        load_chain(steps)



# ------------------------------------------------------------ fields the step's kind never reads
KINDS: dict[str, Any] = {
    "name": "kinds",
    "version": 1,
    "sla": {"total": "2d"},
    "steps": [
        {"id": "plan", "agent": "cfo", "instruction": "Plan."},
        {"id": "debate", "kind": "team", "participants": ["cfo", "strategic"], "depends_on": ["plan"],
         "instruction": "Debate the plan."},
        {"id": "model", "kind": "tool", "tool": "break_even",
         "arguments": {"fixed_costs": 100, "price_per_unit": 10, "variable_cost_per_unit": 2}},
        {"id": "sign_off", "kind": "approval", "depends_on": ["debate", "model"], "approvers": ["executive"]},
    ],
}


def kinds(change) -> dict[str, Any]:  # noqa: ANN001
    return changed(KINDS, change)


def test_a_tool_on_an_agent_step_is_rejected_with_the_fix() -> None:
    """The agent ran and no tool was ever called."""
    data = kinds(lambda d: d["steps"][0].update(tool="break_even", arguments={"fixed_costs": 100}))
    with pytest.raises(TemplateError) as error:
        load(data)
    assert str(error.value).splitlines() == [
        "custom.yaml: steps[0].tool: an agent step does not use 'tool' (a tool step does): remove it or "
        "set kind: tool",
        "custom.yaml: steps[0].arguments: an agent step does not use 'arguments' (a tool step does): remove "
        "it or set kind: tool",
    ]


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        (lambda d: d["steps"][0].update(participants=["cfo", "strategic"]), "steps[0].participants",
         "an agent step does not use 'participants' (a team step does): remove it or set kind: team"),
        (lambda d: d["steps"][0].update(max_turns=3), "steps[0].max_turns",
         "an agent step does not use 'max_turns' (a team step does)"),
        (lambda d: d["steps"][0].update(completion_marker="DONE"), "steps[0].completion_marker",
         "an agent step does not use 'completion_marker'"),
        (lambda d: d["steps"][0].update(urgency=0.8), "steps[0].urgency",
         "an agent step does not use 'urgency'"),
        (lambda d: d["steps"][1].update(agent="cfo"), "steps[1].agent",
         "a team step does not use 'agent' (an agent step does; a team's agents are its 'participants'): "
         "remove it or set kind: agent"),
        (lambda d: d["steps"][2].update(instruction="Compute the break-even."), "steps[2].instruction",
         "a tool step does not use 'instruction' (agent and team steps do; a tool is given its 'arguments'): "
         "remove it"),
        (lambda d: d["steps"][2].update(heartbeat_timeout="10s"), "steps[2].heartbeat_timeout",
         "a tool step does not use 'heartbeat_timeout' (agent and team steps do): remove it"),
        (lambda d: d["steps"][2].update(phase="analysis"), "steps[2].phase",
         "a tool step does not use 'phase'"),
        (lambda d: d["steps"][2].update(agent="cfo"), "steps[2].agent", "a tool step does not use 'agent'"),
        (lambda d: d["steps"][3].update(timeout="1h"), "steps[3].timeout",
         "an approval step does not use 'timeout' (agent, team and tool steps do; a person decides within "
         "the step's 'sla'): remove it"),
        (lambda d: d["steps"][3].update(retry={"max_attempts": 5}), "steps[3].retry",
         "an approval step does not use 'retry'"),
        (lambda d: d["steps"][3].update(requires_approval=True), "steps[3].requires_approval",
         "an approval step is a gate already"),
        (lambda d: d["steps"][3].update(instruction="Check the numbers."), "steps[3].instruction",
         "a person reviews the outputs of its depends_on steps"),
        (lambda d: d["steps"][3].update(agent="cfo"), "steps[3].agent",
         "an approval step does not use 'agent'"),
        # approvers and change requests belong to gates
        (lambda d: d["steps"][0].update(approvers=["executive"]), "steps[0].approvers",
         "no person decides on this agent step, so 'approvers' is never read: add requires_approval: true"),
        (lambda d: d["steps"][2].update(approvers=["executive"], on_failure={"action": "skip"}),
         "steps[2].approvers", "no person decides on this tool step"),
        (lambda d: d["steps"][0].update(max_change_requests=1), "steps[0].max_change_requests",
         "'max_change_requests' is never read; add requires_approval: true or remove it"),
        (lambda d: d["steps"][0].update(max_change_requests=1, on_failure={"action": "escalate"}),
         "steps[0].max_change_requests", "only a review gate can be sent back for changes"),
        # fields one action alone reads
        (lambda d: d["steps"][0].update(on_failure={"action": "skip", "agent": "strategic"}),
         "steps[0].on_failure.agent",
         "only action 'fallback' uses 'agent' (this action is 'skip'): remove it or set action: fallback"),
        (lambda d: d["steps"][0].update(on_failure={"action": "escalate", "max_attempts": 3}),
         "steps[0].on_failure.max_attempts",
         "only action 'retry' uses 'max_attempts' (this action is 'escalate'): remove it or set action: "
         "retry"),
        (lambda d: d["steps"][3].update(sla="1d", escalation=[{"action": "notify", "to": ["ceo"]}]),
         "steps[3].escalation[0].to", "only action 'reassign' uses 'to' (this action is 'notify')"),
        (lambda d: d.update(sla={"total": "2d", "escalation": [{"action": "fail", "decision": "deny"}]}),
         "sla.escalation[0].decision", "only action 'auto_decide' uses 'decision' (this action is 'fail')"),
    ],
)
def test_a_field_the_steps_kind_never_reads_is_rejected(
    change, path: str, message: str  # noqa: ANN001
) -> None:
    with pytest.raises(TemplateError) as error:
        load(kinds(change))
    problems = [f"{problem.path}: {problem.message}" for problem in error.value.problems]
    assert any(problem.startswith(f"{path}: ") and message in problem for problem in problems), problems


def test_a_tool_step_cannot_fall_back_so_the_fix_is_to_remove_the_agent() -> None:
    data = kinds(lambda d: d["steps"][2].update(on_failure={"action": "skip", "agent": "cfo"}))
    with pytest.raises(TemplateError) as error:
        load(data)
    assert str(error.value) == ("custom.yaml: steps[2].on_failure.agent: only action 'fallback' uses 'agent' "
                                "(this action is 'skip'): remove it")


@pytest.mark.parametrize(
    "change",
    [
        lambda d: None,
        # the shipped templates and the documentation label agent steps with these
        lambda d: d["steps"][0].update(phase="analysis", complexity=4),
        lambda d: d["steps"][0].update(approvers=["executive"], requires_approval=True,
                                       max_change_requests=0),
        lambda d: d["steps"][0].update(approvers=["executive"], on_failure={"action": "escalate"}),
        lambda d: d["steps"][0].update(on_failure={"action": "fallback", "agent": "strategic"}),
        lambda d: d["steps"][0].update(on_failure={"action": "retry", "max_attempts": 3}),
        lambda d: d["steps"][0].update(retry={"max_attempts": 2}, timeout="2m", heartbeat_timeout="20s",
                                       title="Plan", when="true", sla="1h", join="any"),
        lambda d: d["steps"][1].update(phase="strategy", complexity=5, urgency=0.5, max_turns=4,
                                       completion_marker="DONE", heartbeat_timeout="1m",
                                       on_failure={"action": "fallback", "agent": "strategic"}),
        lambda d: d["steps"][2].update(retry={"max_attempts": 2}, timeout="30s", requires_approval=True,
                                       approvers=["finance"], max_change_requests=1),
        lambda d: d["steps"][3].update(max_change_requests=3, on_failure={"action": "skip"}, title="Sign off",
                                       sla="1d", escalation=[{"action": "reassign", "to": ["ceo"]},
                                                             {"action": "auto_decide", "decision": "deny"}]),
        # written empty, a field asks for nothing (code that writes every field out writes these)
        lambda d: d["steps"][0].update(tool=None, arguments={}, participants=[], approvers=[],
                                       requires_approval=False, instruction="Plan.", retry={}),
        lambda d: d["steps"][1].update(agent=None),
        lambda d: d["steps"][2].update(instruction="", requires_approval=False),
        lambda d: d["steps"][3].update(requires_approval=False, retry={}, sla="1d",
                                       escalation=[{"action": "notify", "to": []}]),
    ],
)
def test_fields_each_kind_reads_still_load(change) -> None:  # noqa: ANN001
    load(kinds(change))


def test_every_step_field_is_sorted_by_the_kinds_that_read_it() -> None:
    """A new StepSpec field must be placed in the table, or it would never be judged."""
    from convergio.graphflow.template import StepSpec
    from convergio.graphflow.validation import _JUDGED_APART, _READ_BY, _READ_BY_EVERY_KIND

    groups = [set(_READ_BY), set(_READ_BY_EVERY_KIND), set(_JUDGED_APART)]
    assert set().union(*groups) == set(StepSpec.model_fields)
    assert sum(len(group) for group in groups) == len(StepSpec.model_fields)  # each field in one group


def test_a_pinned_template_with_an_unused_field_still_decodes() -> None:
    """Runs pin their template: the rule applies where a template loads, not in the model."""
    from convergio.graphflow.template import Template

    data = kinds(lambda d: d["steps"][0].update(tool="break_even"))
    assert Template.model_validate(data).steps[0].tool == "break_even"
    with pytest.raises(TemplateError):
        load(data)



# ------------------------------------------------------------ types that can never match
TYPES: dict[str, Any] = {
    "name": "types",
    "version": 1,
    "inputs": {
        "company": {"type": "string", "required": True},
        "note": {"type": "string"},  # optional, no default: null when left out
        "budget": {"type": "number", "default": 10},
        "seats": {"type": "integer", "default": 5},
        "flag": {"type": "boolean", "default": False},
        "regions": {"type": "list", "default": ["EU"]},
    },
    "steps": [
        {"id": "plan", "agent": "cfo", "instruction": "Plan."},
        {"id": "next", "agent": "cfo", "depends_on": ["plan"], "instruction": "Go on."},
    ],
}
# What a run may hold, every value of the declared type (the expressions rejected fail on it).
RUN_CONTEXT: dict[str, Any] = {
    "inputs": {"company": "Acme", "note": "urgent", "budget": 10, "seats": 5, "flag": True,
               "regions": ["EU"]},
    "steps": {"plan": {"output": "## Plan\nGo.", "status": "completed", "score": 8.0, "data": {"total": 3},
                       "agent": "cfo", "iterations": 1}},
}

MISTYPED = [
    ("steps.plan.output > 5",
     "'steps.plan.output > 5' compares a text with a number, which fails at run time"),
    ("inputs.company > 5", "'inputs.company > 5' compares a text with a number"),
    ("inputs.note > 5", "'inputs.note > 5' compares a text with a number"),  # whenever it is given
    ("inputs.company + 1 > 2",
     "'inputs.company + 1' uses '+' on a text and a number, which fails at run time: arithmetic needs two "
     "numbers"),
    ("steps.plan.score > '7'", "\"steps.plan.score > '7'\" compares a number with a text"),
    ("len(inputs.budget) > 0", "'len(inputs.budget)' takes the length of a number, which fails at run time"),
    ("len(steps.plan.iterations) > 0", "'len(steps.plan.iterations)' takes the length of a number"),
    ("inputs.flag > 0", "'inputs.flag > 0' compares a true/false value with a number"),
    ("inputs.regions < 3", "'inputs.regions < 3' compares a list with a number"),
    ("inputs.seats >= 'five'", "compares a number with a text"),
    ("5 in steps.plan.output", "'5 in steps.plan.output' looks for a number in a text"),
    ("'x' in inputs.budget", "looks in a number, which fails at run time"),
    ("-inputs.company < 0", "'-inputs.company' uses '-' on a text"),
    ("lower(inputs.budget) == 'ten'", "'lower(inputs.budget)' applies lower() to a number"),
    ("any_of(inputs.budget, ['ten'])", "\"any_of(inputs.budget, ['ten'])\" searches a number"),
    ("any_of(steps.plan.output, ['risk', 1])", "lists a word that is not a text"),
    ("(steps.plan.score > 7) * 2 > 1", "uses '*' on a true/false value and a number"),
    ("1 < inputs.budget <= 'x'", "\"inputs.budget <= 'x'\" compares a number with a text"),
    ("steps.plan.status == 'completed' and steps.plan.iterations > '2'",
     "\"steps.plan.iterations > '2'\" compares a number with a text"),
]


@pytest.mark.parametrize(("when", "message"), MISTYPED)
def test_a_condition_whose_types_can_never_match_is_rejected(when: str, message: str) -> None:
    data = copy.deepcopy(TYPES)
    data["steps"][1]["when"] = when
    with pytest.raises(TemplateError) as error:
        load(data)
    problems = [(problem.path, problem.message) for problem in error.value.problems]
    assert any(path == "steps[1].when" and message in found for path, found in problems), problems


@pytest.mark.parametrize(("when", "message"), MISTYPED)
def test_what_is_rejected_does_fail_at_run_time(when: str, message: str) -> None:  # noqa: ARG001
    """The claim of the message, on a run holding a value of every declared type."""
    from convergio.graphflow.expressions import ExpressionError, compile_expression

    with pytest.raises(ExpressionError):
        compile_expression(when).evaluate(RUN_CONTEXT)


STILL_TYPED_RIGHT = [
    "number(steps.plan.output) > 5",
    "steps.plan.score >= 7 and steps.plan.iterations < 3",
    "steps.plan.output == 5",  # equality never fails
    "steps.plan.data.total > 5",  # data: any value
    "inputs.regions[0] > 'A'",  # an element: any value
    "inputs.company > null",  # null: false, no error
    "inputs.budget * 2 + inputs.seats > 100",
    "len(inputs.regions) > 2 or len(inputs.note) == 0",
    "(inputs.budget or 'x') > 5",  # either operand: not certain
    "'risk' in lower(steps.plan.output) and 'EU' in inputs.regions",
    "any_of(steps.plan.output, ['risk']) and steps.plan.agent == 'cfo'",
    "upper(steps.plan.status) == 'COMPLETED' and not inputs.flag",
    "inputs.company >= 'M'",
]


@pytest.mark.parametrize("when", STILL_TYPED_RIGHT)
def test_conditions_whose_types_can_match_still_load(when: str) -> None:
    from convergio.graphflow.expressions import compile_expression

    data = copy.deepcopy(TYPES)
    data["steps"][1]["when"] = when
    load(data)
    compile_expression(when).evaluate(RUN_CONTEXT)  # and they run


def test_every_mistyped_operation_is_reported() -> None:
    data = copy.deepcopy(TYPES)
    data["steps"][1]["when"] = "steps.plan.output > 5 or len(inputs.budget) > 0"
    with pytest.raises(TemplateError) as error:
        load(data)
    assert [problem.message.split(" ")[0] for problem in error.value.problems] == [
        "'steps.plan.output", "'len(inputs.budget)'",
    ]


def test_a_loop_condition_and_a_metric_check_are_typed_too() -> None:
    data = copy.deepcopy(TYPES)
    data["steps"][1]["loop"] = {"back_to": "plan", "while": "steps.next.score < '8'", "max_iterations": 3}
    data["success_metrics"] = [
        {"name": "cheap", "check": "run.cost_usd < '1'"},
        {"name": "fast", "check": "run.status == 'completed' and run.duration_s <= 60"},
    ]
    data["steps"][0]["success_metrics"] = [{"name": "long", "check": "steps.plan.output > 100"}]
    with pytest.raises(TemplateError) as error:
        load(data)
    assert [str(problem) for problem in error.value.problems] == [
        "steps[1].loop.while: \"steps.next.score < '8'\" compares a number with a text, which fails at run "
        "time; number(...) reads a number from a text",
        "success_metrics[0].check: \"run.cost_usd < '1'\" compares a number with a text, which fails when "
        "the metric is measured; number(...) reads a number from a text",
        "steps[0].success_metrics[0].check: 'steps.plan.output > 100' compares a text with a number, which "
        "fails when the metric is measured; number(...) reads a number from a text",
    ]


def test_the_typed_fields_are_the_ones_a_run_holds() -> None:
    """A step's and the run's fields as expressions read them; data is anything, so it has no type."""
    from convergio.graphflow.run_models import STEP_CONTEXT_FIELDS
    from convergio.graphflow.success_metrics import RUN_FIELDS
    from convergio.graphflow.validation import _RUN_FIELD_TYPES, _STEP_FIELD_TYPES

    assert set(_STEP_FIELD_TYPES) == STEP_CONTEXT_FIELDS - {"data"}
    assert set(_RUN_FIELD_TYPES) == set(RUN_FIELDS)


@pytest.mark.parametrize(("value", "seconds"), [("30", 30), ("2.5", 2.5), ("00:05:00", 300), ("PT5M", 300)])
def test_a_quoted_number_is_seconds_and_other_forms_still_read(
    tmp_path: Path, value: str, seconds: float
) -> None:
    """`timeout: "30"` was refused with Pydantic's '"day" identifier in duration not correctly
    formatted'; a number of seconds is a number of seconds, quoted or not."""
    path = tmp_path / "custom.yaml"
    path.write_text(DURATION_TEMPLATE.format(field="timeout", value=f'"{value}"'))
    template = load_template_file(path, agents=default_catalog().names(), tools=tool_names())
    assert template.steps[0].timeout.total_seconds() == seconds


def test_a_text_that_is_no_duration_says_which_forms_are(tmp_path: Path) -> None:
    path = tmp_path / "custom.yaml"
    path.write_text(DURATION_TEMPLATE.format(field="timeout", value="thirty seconds"))
    with pytest.raises(TemplateError) as error:
        load_template_file(path, agents=default_catalog().names(), tools=tool_names())
    message = str(error.value)
    assert "custom.yaml: steps[0].timeout: " in message and "'thirty seconds' is not a duration" in message
    assert "identifier" not in message


def test_a_duplicate_step_id_is_reported_alone() -> None:
    """With two steps 'risks', the checks after it misled: 'a step cannot depend on itself' for a
    step that depends on the other 'risks'."""
    steps = [{"id": "risks", "agent": "cfo", "instruction": "x"},
             {"id": "risks", "agent": "cfo", "instruction": "y", "depends_on": ["risks"]}]
    with pytest.raises(TemplateError) as error:
        load({"name": "twice", "version": 1, "steps": steps})
    assert str(error.value) == "custom.yaml: steps[1].id: duplicate step id 'risks'"


# ------------------------------------------------------------ policy fields their outcome never reads
@pytest.mark.parametrize(
    ("policy", "path"),
    [
        ({"budget": {"on_breach": "stop", "downgrade_model": "openai:gpt-4o-mini"}},
         "budget.downgrade_model"),
        ({"budget": {"on_breach": "downgrade", "downgrade_model": "openai:gpt-4o-mini",
                     "approvers": ["cfo"]}}, "budget.approvers"),
        ({"security": {"on_flag": "redact", "on_block": "block", "approvers": ["ciso"]}},
         "security.approvers"),
    ],
)
def test_a_policy_field_its_outcome_never_reads_is_rejected(policy: dict[str, Any], path: str) -> None:
    """`downgrade_model` under `on_breach: stop` downgraded nothing, silently."""
    with pytest.raises(TemplateError) as error:
        load(changed(CHAINS, lambda d: d.update(policy)))
    assert f"custom.yaml: {path}: " in str(error.value)


@pytest.mark.parametrize(
    "policy",
    [
        {"budget": {"on_breach": "downgrade", "downgrade_model": "openai:gpt-4o-mini"}},
        {"budget": {"on_breach": "approval", "approvers": ["cfo"]}},
        {"budget": {"on_breach": "stop", "approvers": []}},
        {"security": {"on_flag": "approval", "approvers": ["ciso"]}},
        {"security": {"on_flag": "redact", "on_block": "approval", "approvers": ["ciso"]}},
    ],
)
def test_policy_fields_their_outcome_reads_still_load(policy: dict[str, Any]) -> None:
    load(changed(CHAINS, lambda d: d.update(policy)))
