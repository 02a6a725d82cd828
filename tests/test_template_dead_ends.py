"""Templates that load but could never work as written are rejected when they load: a gate no
role can decide, an escalation chain without the SLA that starts it, a condition that is false
whenever it is read, a boolean where a duration belongs, and (no rule, a limit) long chains of
steps, which are checked without recursion."""

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
    data = copy.deepcopy(ROLES)
    change(data)
    with pytest.raises(TemplateError) as error:
        load(data)
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
    data = copy.deepcopy(ROLES)
    change(data)
    load(data)



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
    data = copy.deepcopy(CHAINS)
    change(data)
    with pytest.raises(TemplateError) as error:
        load(data)
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
    data = copy.deepcopy(CHAINS)
    change(data)
    load(data)



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
