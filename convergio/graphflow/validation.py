"""Whole-template checks that a field validator cannot make alone.

Every problem names its field path (``steps[2].depends_on[0]``) so the message,
prefixed with the file, points at the exact line to fix.
"""

from __future__ import annotations

import ast
import reprlib
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import to_jsonable_python

from convergio.graphflow.expressions import (
    ARITHMETIC,
    ORDERING,
    Expression,
    ExpressionError,
    compile_expression,
)
from convergio.graphflow.placeholders import (
    PLACEHOLDER,
    is_placeholder_name,
    malformed_placeholders,
    placeholder_paths,
    render_value,
)
from convergio.graphflow.run_models import STEP_CONTEXT_FIELDS
from convergio.graphflow.success_metrics import METRIC_ROOTS, RUN_FIELDS, template_metrics
from convergio.graphflow.template import (
    EscalationSpec,
    FailureSpec,
    InputSpec,
    StepSpec,
    Template,
    format_duration,
)


MAX_INPUT_NAME = 64
MAX_ROLE = 100  # ApprovalDecision.role
# Pydantic errors that say a value is of the wrong type (its other errors are about ranges,
# lengths and the tool's own validators: those are left to run time, like placeholders).
_TYPE_ERRORS = frozenset({
    "int_from_float", "none_required", "enum", "literal_error", "is_instance_of",
    "union_tag_invalid", "union_tag_not_found",
})

# Which step fields each kind of step reads (convergio/workflows/graphflow.py); the workflow
# ignores a field on the other kinds. test_template_dead_ends checks that every field is sorted in.
# Read whatever the kind: on_failure too (an approval step reworks the steps it reviews).
_READ_BY_EVERY_KIND = frozenset({
    "id", "kind", "title", "depends_on", "join", "when", "sla", "escalation", "success_metrics",
    "on_failure", "loop",
})
# Read depending on the step's gates (approvers, max_change_requests), or checked on their own.
_JUDGED_APART = frozenset({"approvers", "max_change_requests", "quality", "knowledge", "on_denied"})
_READ_BY: dict[str, tuple[str, ...]] = {
    "agent": ("agent",),  # a team's fallback agent is on_failure.agent
    "participants": ("team",),
    "phase": ("team",),  # phase, complexity and urgency: the team's speaker selector
    "complexity": ("team",),
    "urgency": ("team",),
    "max_turns": ("team",),
    "completion_marker": ("team",),
    "tool": ("tool",),
    "arguments": ("tool",),
    "instruction": ("agent", "team"),
    "heartbeat_timeout": ("agent", "team"),  # model calls; a tool step's activity has no heartbeat
    "retry": ("agent", "team", "tool"),  # the step's activities: an approval step runs none
    "timeout": ("agent", "team", "tool"),
    "requires_approval": ("agent", "team", "tool"),
}
# Read by no agent step, yet written there by the shipped templates and the documentation: they
# describe the step's work (its mission phase, how hard it is), so they are let be.
_LABELS: dict[str, frozenset[str]] = {"agent": frozenset({"phase", "complexity"})}
_UNUSED_HINTS: dict[tuple[str, str], str] = {
    ("team", "agent"): "a team's agents are its 'participants'",
    ("tool", "instruction"): "a tool is given its 'arguments'",
    ("approval", "instruction"): "a person reviews the outputs of its depends_on steps",
    ("approval", "timeout"): "a person decides within the step's 'sla'",
    ("approval", "requires_approval"): "an approval step is a gate already",
}
# Fields of on_failure and of an escalation link that one action alone reads.
_FAILURE_ACTION_FIELDS: dict[str, str] = {"agent": "fallback", "max_attempts": "retry"}
_ESCALATION_ACTION_FIELDS: dict[str, str] = {"to": "reassign", "decision": "auto_decide"}


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class TemplateError(ValueError):
    """A template that cannot run; lists every problem found, each with its field path."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {problem}" for problem in problems))


@dataclass
class _Checker:
    template: Template
    agents: Collection[str]
    tools: Collection[str]
    problems: list[Problem] = field(default_factory=list)

    def add(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def run(self) -> list[Problem]:
        ids = [step.id for step in self.template.steps]
        seen: set[str] = set()
        for index, step_id in enumerate(ids):
            if step_id in seen:
                self.add(f"steps[{index}].id", f"duplicate step id '{step_id}'")
            seen.add(step_id)
        if self.problems:  # every later check finds steps by id: with two alike they would mislead
            return self.problems
        for name, spec in self.template.inputs.items():
            if len(name) > MAX_INPUT_NAME:  # it names the input's security gate, security_input_<name>
                self.add(f"inputs.{name[:20]}…", f"an input name has at most {MAX_INPUT_NAME} characters")
            elif not is_placeholder_name(name):  # else no {inputs.<name>} could ever fill it in
                self.add(f"inputs.{name}", f"'{name}' is not a valid input name: use lower-case letters, "
                                           "digits and '_', not starting with a digit (e.g. company_name)")
            if spec.default is not None and not spec.accepts(spec.default):
                self.add(f"inputs.{name}.default", f"expected {spec.type}, got {type(spec.default).__name__}")
        for index, step in enumerate(self.template.steps):
            self._check_step(index, step, set(ids))
        self._check_denial_paths()
        self._check_durations()
        self._check_roles()
        self._check_policy_fields()
        sla = self.template.sla
        if sla.escalation and "escalation" in sla.model_fields_set and sla.total is None:
            self.add("sla.escalation", "the run's escalation chain runs when its SLA passes, and the "
                                       "template has no 'sla.total': it would never run; add total: <time>")
        for position, link in enumerate(sla.escalation):
            self._check_action_fields(f"sla.escalation[{position}]", link, _ESCALATION_ACTION_FIELDS)
        if not self.problems:
            self._check_cycles()
        if not self.problems:
            for index, step in enumerate(self.template.steps):
                self._check_references(index, step)
        if not self.problems:
            self._check_gate_outcomes()
        self._check_metrics(set(ids))
        return self.problems

    def _check_metrics(self, ids: set[str]) -> None:
        """Checks are measured when the run ends: they may read any step, input or run field."""
        for path, _, metric in template_metrics(self.template):
            if metric.check is None:
                continue
            try:
                expression = compile_expression(metric.check, METRIC_ROOTS)
            except ExpressionError as exc:
                self.add(f"{path}.check", f"bad expression: {exc}")
                continue
            self._check_step_fields(f"{path}.check", expression)
            if (error := _constant_error(expression)) is not None:
                self.add(f"{path}.check", f"bad expression: it fails whatever the data: {error}")
            else:
                when = "when the metric is measured"
                for message in _type_problems(expression, self.template.inputs, when):
                    self.add(f"{path}.check", message)
            for root, key in expression.references():
                if root == "inputs" and key not in self.template.inputs:
                    self.add(f"{path}.check", f"unknown input '{key}'; declare it under inputs")
                elif root == "steps" and key not in ids:
                    self.add(f"{path}.check", f"unknown step '{key}'")
                elif root == "run" and key not in RUN_FIELDS:
                    self.add(f"{path}.check", f"unknown run field '{key}'; use one of {', '.join(RUN_FIELDS)}")

    def _check_step(self, index: int, step: StepSpec, ids: set[str]) -> None:
        where = f"steps[{index}]"
        for position, dependency in enumerate(step.depends_on):
            if dependency not in ids:
                self.add(f"{where}.depends_on[{position}]", f"unknown step '{dependency}'")
            elif dependency == step.id:
                self.add(f"{where}.depends_on[{position}]", "a step cannot depend on itself")
        for path, name in _agent_fields(where, step):
            if name not in self.agents:
                self.add(path, f"unknown agent '{name}'; known agents: {', '.join(sorted(self.agents))}")
        if step.kind == "tool" and step.tool not in self.tools:
            self.add(f"{where}.tool", f"unknown tool '{step.tool}'; known tools: {', '.join(sorted(self.tools))}")
        elif step.kind == "tool" and step.tool:
            self._check_tool_arguments(where, step.tool, step.arguments)
        if step.on_failure.action == "fallback" and step.kind in ("tool", "approval"):
            self.add(f"{where}.on_failure.action", f"a {step.kind} step has no agent to fall back from")
        if step.quality is not None and step.kind in ("tool", "approval"):  # the workflow never reads it
            self.add(f"{where}.quality", "'quality' applies to agent and team steps only; "
                                         f"the output of this {step.kind} step is never checked")
        self._check_unused_fields(where, step)
        if step.kind == "team" and len(set(step.participants)) != len(step.participants):
            self.add(f"{where}.participants", "a participant is listed twice")
        if step.loop and step.loop.back_to not in ids:
            self.add(f"{where}.loop.back_to", f"unknown step '{step.loop.back_to}'")
        if step.loop and step.loop.max_iterations < 2:  # not in LoopSpec: pinned runs must still decode
            self.add(f"{where}.loop.max_iterations", "1 means the loop never repeats: max_iterations counts "
                                                     "the first run too, so it must be at least 2")
        if step.escalation and "escalation" in step.model_fields_set and step.sla is None:
            self.add(f"{where}.escalation", "an escalation chain runs when the step's SLA passes, and this "
                                            "step has no 'sla': it would never run; add sla: <duration>")
        is_gate = step.kind == "approval" or step.requires_approval
        for position, link in enumerate(step.escalation):
            if link.action in ("reassign", "auto_decide") and not is_gate:
                self.add(f"{where}.escalation[{position}].action", f"'{link.action}' applies to approval gates only")
        if step.on_denied and not is_gate:
            self.add(f"{where}.on_denied", "only an approval gate can have an on_denied path")
        for position, target in enumerate(step.on_denied):
            if target not in ids:
                self.add(f"{where}.on_denied[{position}]", f"unknown step '{target}'")
            elif step.id not in self.template.step(target).depends_on:
                self.add(f"{where}.on_denied[{position}]", f"'{target}' must list '{step.id}' in depends_on")

    def _check_unused_fields(self, where: str, step: StepSpec) -> None:
        """Fields the author wrote that the workflow never reads for this step: the run would quietly
        differ from the template (a ``tool`` on an agent step calls no tool). Only written fields are
        judged, and an empty value (null, [], {}, false, '') asks for nothing, so it is let be."""
        written = {name for name in step.model_fields_set if not _says_nothing(getattr(step, name))}
        for name in sorted(written & _READ_BY.keys(), key=list(StepSpec.model_fields).index):
            readers = _READ_BY[name]
            if step.kind in readers or name in _LABELS.get(step.kind, ()):
                continue
            hint = _UNUSED_HINTS.get((step.kind, name))
            fix = f" or set kind: {readers[0]}" if len(readers) == 1 else ""
            self.add(f"{where}.{name}", f"{_a(step.kind)} step does not use '{name}' ({_readers(readers)}"
                                        f"{'; ' + hint if hint else ''}): remove it{fix}")
        is_gate = step.kind == "approval" or step.requires_approval
        if "approvers" in written and not is_gate and step.on_failure.action != "escalate":
            self.add(f"{where}.approvers", f"no person decides on this {step.kind} step, so 'approvers' is "
                                           "never read: add requires_approval: true (a person approves its "
                                           "output) or on_failure: {action: escalate}, or remove it")
        if "max_change_requests" in written and not is_gate:
            self.add(f"{where}.max_change_requests",
                     f"only a review gate can be sent back for changes, and this {step.kind} step has no "
                     "requires_approval: 'max_change_requests' is never read; add requires_approval: true "
                     "or remove it")
        self._check_action_fields(f"{where}.on_failure", step.on_failure, _FAILURE_ACTION_FIELDS,
                                  can_fall_back=step.kind in ("agent", "team"))
        for position, link in enumerate(step.escalation):
            self._check_action_fields(f"{where}.escalation[{position}]", link, _ESCALATION_ACTION_FIELDS)

    def _check_action_fields(
        self, where: str, spec: FailureSpec | EscalationSpec, fields: Mapping[str, str], *,
        can_fall_back: bool = True,
    ) -> None:
        """A field only one ``action`` reads (on_failure's ``agent``, an escalation's ``to``), written
        with another action: e.g. ``{action: skip, agent: cfo}`` never falls back to cfo."""
        action = spec.action
        for name, reader in fields.items():
            if name not in spec.model_fields_set or _says_nothing(getattr(spec, name)) or action == reader:
                continue
            fix = f" or set action: {reader}" if reader != "fallback" or can_fall_back else ""
            self.add(f"{where}.{name}", f"only action '{reader}' uses '{name}' (this action is '{action}'): "
                                        f"remove it{fix}")

    def _check_durations(self) -> None:
        """A timeout, interval or deadline of zero or less fails (or fires) at once at run time, and
        Temporal refuses a retry policy whose first interval exceeds its longest."""
        for path, value, zero_allowed in _durations(self.template):
            if value < timedelta(0) or (value == timedelta(0) and not zero_allowed):
                wanted = "must not be negative" if zero_allowed else "must be a positive duration"
                self.add(path, f"{wanted}, got {format_duration(value)}")
        for index, step in enumerate(self.template.steps):
            first, longest = step.retry.initial_interval, step.retry.max_interval
            if first > longest:
                message = f"initial_interval ({format_duration(first)}) is longer than max_interval"
                self.add(f"steps[{index}].retry", f"{message} ({format_duration(longest)})")

    def _check_roles(self) -> None:
        """Every gate must have a role that can decide it: a decision names one role, of 1 to
        MAX_ROLE characters, and an empty list or a blank role would leave the run waiting forever."""
        lists: list[tuple[str, list[str], bool]] = []  # (path, roles, whether the list may be empty)
        for index, step in enumerate(self.template.steps):
            where = f"steps[{index}]"
            lists.append((f"{where}.approvers", step.approvers, True))  # empty: a default role
            lists += [(f"{where}.escalation[{i}].to", link.to, link.action != "reassign")
                      for i, link in enumerate(step.escalation)]
        lists += [(f"sla.escalation[{i}].to", link.to, link.action != "reassign")
                  for i, link in enumerate(self.template.sla.escalation)]
        budget, security = self.template.budget, self.template.security
        lists.append(("budget.approvers", budget.approvers, budget.on_breach != "approval"))
        lists.append(("security.approvers", security.approvers,
                      "approval" not in (security.on_flag, security.on_block)))
        for path, roles, may_be_empty in lists:
            if not roles and not may_be_empty:
                self.add(path, "no role could decide this gate and the run would wait forever; "
                               "name at least one role")
            for position, role in enumerate(roles):
                if not role.strip() or len(role) > MAX_ROLE:
                    self.add(f"{path}[{position}]", f"{role!r} is not a role a decision can name: "
                                                    f"a role has 1 to {MAX_ROLE} characters, not blank")

    def _check_policy_fields(self) -> None:
        """The budget's and the security policy's fields that one outcome alone reads, written with
        another: ``downgrade_model`` under ``on_breach: stop`` never downgrades anything."""
        budget, security = self.template.budget, self.template.security
        written = {name for name in budget.model_fields_set if not _says_nothing(getattr(budget, name))}
        for name, reader in (("downgrade_model", "downgrade"), ("approvers", "approval")):
            if name in written and budget.on_breach != reader:
                self.add(f"budget.{name}", f"only on_breach: {reader} uses '{name}' (this budget's is "
                                           f"'{budget.on_breach}'): remove it or set on_breach: {reader}")
        asks = "approval" in (security.on_flag, security.on_block)
        if "approvers" in security.model_fields_set and security.approvers and not asks:
            self.add("security.approvers", "no rule of this policy asks a person (on_flag and on_block are "
                                           "not 'approval'), so 'approvers' is never read: remove it")

    def _check_denial_paths(self) -> None:
        """A step follows the denial of one gate: the workflow keeps one gate per step, the last."""
        gate_of: dict[str, str] = {}
        for index, step in enumerate(self.template.steps):
            for position, target in enumerate(step.on_denied):
                where = f"steps[{index}].on_denied[{position}]"
                if target not in gate_of:
                    gate_of[target] = step.id
                elif gate_of[target] == step.id:
                    self.add(where, f"'{target}' is listed twice")
                else:
                    self.add(where, f"'{target}' is already on the on_denied path of gate "
                                    f"'{gate_of[target]}'; a step can follow the denial of one gate only")

    def _check_tool_arguments(self, where: str, tool: str, arguments: Mapping[str, Any]) -> None:
        """Argument names, and the types of literal values, against the tool's input model."""
        from convergio.tools.registry import UnknownToolError, get_tool

        try:
            model = get_tool(tool).input_model
        except UnknownToolError:
            return  # a tool the caller knows but this process has not registered: nothing to check against
        fields = model.model_fields
        for name in arguments:
            if name not in fields:
                self.add(f"{where}.arguments.{name}", f"'{tool}' has no argument '{name}'; its arguments: "
                                                      f"{', '.join(fields)}")
        for name, info in fields.items():
            if info.is_required() and name not in arguments:
                self.add(f"{where}.arguments", f"'{tool}' needs the argument '{name}'")
        self._check_literal_types(where, tool, model, arguments)

    def _check_literal_types(
        self, where: str, tool: str, model: type[BaseModel], arguments: Mapping[str, Any]
    ) -> None:
        """Literal values of the wrong type fail every run; a value with a placeholder anywhere in it
        is only known at run time. The literals are validated as the run will (same model, same
        unescaping of '{{' and '}}'), and only type errors at a literal's own path are kept."""
        literals = {  # as JSON, the form a run receives them in (a YAML date is a string there)
            name: to_jsonable_python(render_value(value, {})) for name, value in arguments.items()
            if name in model.model_fields and not _has_placeholder(value)
        }
        try:
            model.model_validate(literals)
        except ValidationError as exc:
            errors = exc.errors()
        except Exception:  # noqa: BLE001 - a tool validator that needs the run-time arguments too
            return
        else:
            return
        for error in errors:
            location = error["loc"]
            if not location or location[0] not in literals or not _is_type_error(error["type"]):
                continue
            path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in location)
            self.add(f"{where}.arguments{path}",
                     f"wrong type for '{tool}': {error['msg']} (got {reprlib.repr(error['input'])})")

    def _check_cycles(self) -> None:
        """depends_on must be acyclic; bounded repetition is written with ``loop``. Depth first without
        recursion: a long chain of steps must not exhaust Python's stack."""
        graph = {step.id: step.depends_on for step in self.template.steps}
        state: dict[str, str] = {}
        for root in graph:
            if root in state:
                continue
            state[root] = "visiting"
            path = [root]
            pending = [iter(graph[root])]
            while pending:
                dependency = next(pending[-1], None)
                if dependency is None:
                    state[path.pop()] = "done"
                    pending.pop()
                elif state.get(dependency) == "visiting":
                    node = path[-1]
                    cycle = path[path.index(dependency):] + [dependency]
                    index = next(i for i, s in enumerate(self.template.steps) if s.id == node)
                    self.add(
                        f"steps[{index}].depends_on",
                        f"cycle without a bound: {' -> '.join(reversed(cycle))}; write a bounded "
                        "repetition as loop: {back_to, while, max_iterations}",
                    )
                    return
                elif dependency not in state:
                    state[dependency] = "visiting"
                    path.append(dependency)
                    pending.append(iter(graph[dependency]))

    @property
    def _step_ids(self) -> list[str]:
        return [step.id for step in self.template.steps]

    def _check_references(self, index: int, step: StepSpec) -> None:
        where = f"steps[{index}]"
        upstream = ancestors(self.template, step.id)
        texts = {f"{where}.instruction": step.instruction}
        texts.update({f"{where}.arguments.{key}": str(value) for key, value in step.arguments.items()})
        if step.knowledge is not None and step.knowledge.query:
            texts[f"{where}.knowledge.query"] = step.knowledge.query
        for path, text in texts.items():
            for root, key, rest in placeholder_paths(text):
                self._check_reference(path, root, key, step, upstream)
                if root == "steps" and (not rest or rest[0] not in STEP_CONTEXT_FIELDS):
                    self.add(path, f"{{steps.{key}{''.join('.' + part for part in rest)}}} names no field of a step; "
                                   f"use one of {', '.join(sorted(STEP_CONTEXT_FIELDS))}")
            for text_found in malformed_placeholders(text, [*self.template.inputs, *self._step_ids]):
                self.add(path, f"'{text_found}' is not a placeholder: write {{inputs.<name>}} or "
                               "{steps.<id>.output} in lower case, or double the braces for literal text")
        expressions = {f"{where}.when": step.when}
        if step.loop:
            expressions[f"{where}.loop.while"] = step.loop.while_
            if step.loop.back_to != step.id and step.loop.back_to not in upstream:
                self.add(f"{where}.loop.back_to", f"'{step.loop.back_to}' is not upstream of '{step.id}'")
        for path, source in expressions.items():
            if source is None:
                continue
            try:
                expression = compile_expression(source)
            except ExpressionError as exc:
                self.add(path, f"bad expression: {exc}")
                continue
            loop_scope = upstream | {step.id} if path.endswith("loop.while") else upstream
            for root, key in expression.references():
                self._check_reference(path, root, key, step, loop_scope)
            self._check_step_fields(path, expression)
            if (error := _constant_error(expression)) is not None:
                self.add(path, f"bad expression: it fails whatever the data: {error}")
            elif mistyped := _type_problems(expression, self.template.inputs, "at run time"):
                for message in mistyped:
                    self.add(path, message)
            elif _always_false(expression):
                if path.endswith("loop.while"):
                    self.add(path, f"the loop never repeats: its condition is always false ({source})")
                else:
                    self.add(path, f"step '{step.id}' is unreachable: its condition is always false ({source})")
            elif path.endswith(".when") and (known := self._statuses_when_evaluated(step)):
                if _always_false(expression, known):
                    statuses = ", ".join(f"{d} {status}" for d, status in known.items())
                    self.add(path, f"step '{step.id}' is unreachable: its condition is checked only once "
                                   f"{statuses}, and then it is always false ({source}); a denied gate's "
                                   "steps go in its on_denied, a step that runs after a failed or skipped "
                                   "one uses join: any")

    def _statuses_when_evaluated(self, step: StepSpec) -> dict[str, str]:
        """What the workflow knows of the dependencies when it evaluates the step's ``when``: a
        gate's on_denied step runs only after that gate was denied; with ``join: all`` a step runs
        only if every dependency completed (else it is skipped before its condition is read)."""
        gate = next((s.id for s in self.template.steps if step.id in s.on_denied), None)
        if gate is not None:
            return {gate: "denied"}
        if step.join == "all":
            return {dependency: "completed" for dependency in step.depends_on}
        return {}

    def _check_step_fields(self, path: str, expression: Expression) -> None:
        """``steps.<id>.<field>``: a misspelt field would read null and quietly change the outcome."""
        for read in sorted(expression.paths(), key=str):
            if read[0] == "steps" and len(read) > 2 and read[2] not in STEP_CONTEXT_FIELDS:
                self.add(path, f"steps.{read[1]}.{read[2]}: a step has no field '{read[2]}'; "
                               f"use one of {', '.join(sorted(STEP_CONTEXT_FIELDS))}")

    def _check_reference(self, path: str, root: str, key: str, step: StepSpec, upstream: set[str]) -> None:
        if root == "inputs" and key not in self.template.inputs:
            self.add(path, f"unknown input '{key}'; declare it under inputs")
        elif root == "steps" and key not in upstream:
            known = key in {s.id for s in self.template.steps}
            reason = f"'{key}' is not upstream of '{step.id}' (add it to depends_on)" if known else f"unknown step '{key}'"
            self.add(path, reason)


    def _check_gate_outcomes(self) -> None:
        """A step that needs a gate approved on one path and denied on another can never run."""
        needs = _required_outcomes(self.template)
        for index, step in enumerate(self.template.steps):
            for gate in sorted(_conflicts(needs[step.id])):
                if any(gate in _conflicts(needs[d]) for d in step.depends_on):
                    continue  # reported at the step where the two paths meet
                self.add(
                    f"steps[{index}].depends_on",
                    f"step '{step.id}' can never run: it needs gate '{gate}' both approved and denied "
                    "(it waits for a step of the gate's on_denied path and a step after its approval); "
                    "use join: any, or depend on one path only",
                )


def _says_nothing(value: Any) -> bool:
    """null, false, '', [], {} (a nested spec too): written, they ask for nothing."""
    if isinstance(value, BaseModel):
        return not value.model_fields_set
    return value is None or value is False or (isinstance(value, (str, list, dict)) and not value)


def _a(kind: str) -> str:
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


def _readers(kinds: tuple[str, ...]) -> str:
    """'a tool step does', 'agent and team steps do'."""
    if len(kinds) == 1:
        return f"{_a(kinds[0])} step does"
    return f"{', '.join(kinds[:-1])} and {kinds[-1]} steps do"


def _has_placeholder(value: Any) -> bool:
    """Whether a tool argument is filled in at run time, wholly or in part."""
    if isinstance(value, str):
        return PLACEHOLDER.search(value) is not None
    if isinstance(value, list):
        return any(_has_placeholder(item) for item in value)
    if isinstance(value, dict):
        return any(_has_placeholder(item) for item in value.values())
    return False


def _is_type_error(kind: str) -> bool:
    return kind.endswith(("_type", "_parsing")) or kind in _TYPE_ERRORS


def _agent_fields(where: str, step: StepSpec) -> Iterator[tuple[str, str]]:
    """(field path, agent name) of every agent a step names."""
    if step.agent:
        yield f"{where}.agent", step.agent
    for position, name in enumerate(step.participants):
        yield f"{where}.participants[{position}]", name
    if step.quality and step.quality.reviewer:
        yield f"{where}.quality.reviewer.agent", step.quality.reviewer.agent
    if step.on_failure.agent:
        yield f"{where}.on_failure.agent", step.on_failure.agent


def _durations(template: Template) -> Iterator[tuple[str, timedelta, bool]]:
    """(field path, duration, whether zero is allowed) of every duration in the template;
    zero is allowed only for an escalation link's ``after`` (at once)."""

    def chain(where: str, links: list[EscalationSpec]) -> Iterator[tuple[str, timedelta, bool]]:
        for position, link in enumerate(links):
            yield f"{where}.escalation[{position}].after", link.after, True

    for index, step in enumerate(template.steps):
        where = f"steps[{index}]"
        yield f"{where}.timeout", step.timeout, False
        yield f"{where}.heartbeat_timeout", step.heartbeat_timeout, False
        yield f"{where}.retry.initial_interval", step.retry.initial_interval, False
        yield f"{where}.retry.max_interval", step.retry.max_interval, False
        if step.sla is not None:
            yield f"{where}.sla", step.sla, False
        yield from chain(where, step.escalation)
    if template.sla.total is not None:
        yield "sla.total", template.sla.total, False
    yield from chain("sla", template.sla.escalation)


class _ReadsData(Exception):
    pass


class _NoData(Mapping[str, Any]):
    """An expression context whose every read fails: tells constant expressions apart. With
    ``statuses`` it knows ``steps.<id>.status`` of those steps, and only that."""

    def __init__(self, statuses: Mapping[str, str] | None = None) -> None:
        self._statuses = statuses or {}

    def __getitem__(self, key: str) -> Any:
        if key == "steps" and self._statuses:
            return _Known({step: _Known({"status": status}) for step, status in self._statuses.items()})
        raise _ReadsData

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


class _Known(Mapping[str, Any]):
    """Some known values; reading any other fails, like _NoData."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = values

    def __getitem__(self, key: str) -> Any:
        if key in self._values:
            return self._values[key]
        raise _ReadsData

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def _always_false(expression: Expression, statuses: Mapping[str, str] | None = None) -> bool:
    """The expression reads no inputs or outputs and is false (``false``, ``1 > 2``, ``not true``);
    with ``statuses``, it reads at most those steps' statuses and is false with them."""
    try:
        return not expression.test(_NoData(statuses))
    except (_ReadsData, ExpressionError):
        return False


def _constant_error(expression: Expression) -> ExpressionError | None:
    """The error an expression raises before it reads any data (``1/0 == 1``, ``len(1) > 0``).

    Evaluation is deterministic and left to right, so what fails before the first read
    fails on every run: at run time it would fail the run instead of deciding anything.
    """
    try:
        expression.evaluate(_NoData())
    except ExpressionError as error:
        return error
    except _ReadsData:
        pass
    return None


# --------------------------------------------------------------------------- types of values
# The types an expression's values are known to have when they are not null: the run checks an
# input's type when it starts, and a step's fields are fixed (run_models.StepState.as_context,
# success_metrics.RUN_FIELDS). Anything else (data, indexes, nested keys) may hold any value.
_INPUT_TYPES: dict[str, str] = {
    "string": "string", "number": "number", "integer": "number", "boolean": "boolean",
    "list": "list", "object": "object",
}
_STEP_FIELD_TYPES: dict[str, str] = {
    "output": "string", "status": "string", "agent": "string", "score": "number", "iterations": "number",
}
_RUN_FIELD_TYPES: dict[str, str] = {
    "status": "string", "cost_usd": "number", "duration_s": "number", "prompt_tokens": "number",
    "completion_tokens": "number",
}
_TYPE_NAMES: dict[str, str] = {
    "string": "a text", "number": "a number", "boolean": "a true/false value", "list": "a list",
    "object": "an object",
}
_ORDERING_SYMBOLS: dict[type[ast.cmpop], str] = {op: symbol for op, (symbol, _) in ORDERING.items()}
_TO_NUMBER = "; number(...) reads a number from a text"


class _TypeCheck:
    """Finds the operations of an expression that fail whenever they meet a value: a text compared
    with a number (``steps.a.output > 5``), arithmetic on a text, ``len`` of a number.

    A type is inferred only where it is certain: literals, declared inputs, a step's and the run's
    fields, and what operators and functions return; anything else is unknown and never judged.
    A value of a known type may still be null (an optional input left out, a step that did not
    run): null makes an ordering comparison false, arithmetic null and ``len`` 0, so such an
    operation either fails the run or gives that constant, whatever the run holds. Equality
    (``==``, ``!=``) never fails, so a text compared with a number there is left alone.
    """

    def __init__(self, text: str, inputs: Mapping[str, InputSpec], when: str) -> None:
        self.text = text
        self.inputs = inputs
        self.when = when
        self.problems: list[str] = []

    def fails(self, node: ast.AST, what: str, why: str = "") -> None:
        self.problems.append(f"{_quoted(self.show(node))} {what}, which fails {self.when}{why}")

    def show(self, node: ast.AST, operand: bool = False) -> str:
        """The author's own text of ``node``, on one line; an ``operand`` of a comparison gets back
        the parentheses its node does not include."""
        shown = " ".join((ast.get_source_segment(self.text, node) or ast.unparse(node)).split())
        if operand and isinstance(node, (ast.BoolOp, ast.Compare)):
            shown = f"({shown})"
        return shown if len(shown) <= 80 else shown[:79] + "…"

    def infer(self, node: ast.expr) -> str | None:
        """The type of ``node``'s value when it is not null, or None when it is not certain."""
        if isinstance(node, ast.Constant):
            return _literal_type(node.value)
        if isinstance(node, ast.Name):
            return "boolean" if node.id in ("true", "false") else None
        if isinstance(node, (ast.Attribute, ast.Subscript)):
            return self.path_type(node)
        if isinstance(node, (ast.List, ast.Tuple)):
            for element in node.elts:
                self.infer(element)
            return "list"
        if isinstance(node, ast.BoolOp):  # and/or give one of their operands
            kinds = {self.infer(value) for value in node.values}
            return kinds.pop() if len(kinds) == 1 else None
        if isinstance(node, ast.UnaryOp):
            return self.unary(node)
        if isinstance(node, ast.BinOp):
            return self.arithmetic(node)
        if isinstance(node, ast.Compare):
            self.compare(node)
            return "boolean"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            return self.call(node, node.func.id)
        return None

    def path_type(self, node: ast.Attribute | ast.Subscript) -> str | None:
        keys: list[object] = []
        current: ast.expr = node
        while isinstance(current, (ast.Attribute, ast.Subscript)):
            if isinstance(current, ast.Attribute):
                keys.append(current.attr)
            else:
                keys.append(current.slice.value if isinstance(current.slice, ast.Constant) else None)
            current = current.value
        if not isinstance(current, ast.Name):
            return None
        keys.reverse()
        if current.id == "inputs" and len(keys) == 1 and isinstance(keys[0], str) and keys[0] in self.inputs:
            return _INPUT_TYPES.get(self.inputs[keys[0]].type)
        if current.id == "steps" and len(keys) == 2 and all(isinstance(key, str) for key in keys):
            return _STEP_FIELD_TYPES.get(keys[1])
        if current.id == "run" and len(keys) == 1 and isinstance(keys[0], str):
            return _RUN_FIELD_TYPES.get(keys[0])
        return None

    def unary(self, node: ast.UnaryOp) -> str | None:
        kind = self.infer(node.operand)
        if isinstance(node.op, ast.Not):
            return "boolean"
        if kind is not None and kind != "number":
            symbol = "-" if isinstance(node.op, ast.USub) else "+"
            self.fails(node, f"uses '{symbol}' on {_TYPE_NAMES[kind]}", ": it needs a number")
            return None
        return kind

    def arithmetic(self, node: ast.BinOp) -> str | None:
        left, right = self.infer(node.left), self.infer(node.right)
        if left is None or right is None:
            return None
        if left == right == "number":
            return "number"
        symbol = ARITHMETIC.get(type(node.op), "?")
        hint = _TO_NUMBER if "string" in (left, right) else ""
        self.fails(node, f"uses '{symbol}' on {_TYPE_NAMES[left]} and {_TYPE_NAMES[right]}",
                   f": arithmetic needs two numbers{hint}")
        return None

    def compare(self, node: ast.Compare) -> None:
        left_node, left = node.left, self.infer(node.left)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = self.infer(right_node)
            shown = _quoted(self.show(node) if len(node.ops) == 1 else
                            f"{self.show(left_node, True)} {_symbol(op)} {self.show(right_node, True)}")
            if isinstance(op, tuple(_ORDERING_SYMBOLS)) and left is not None and right is not None:
                if not (left == right and left in ("number", "string")):
                    hint = _TO_NUMBER if {left, right} == {"string", "number"} else ""
                    self.problems.append(f"{shown} compares {_TYPE_NAMES[left]} with {_TYPE_NAMES[right]}, "
                                         f"which fails {self.when}{hint}")
            elif isinstance(op, (ast.In, ast.NotIn)) and right is not None:
                if right not in ("string", "list", "object"):
                    self.problems.append(f"{shown} looks in {_TYPE_NAMES[right]}, which fails {self.when}: "
                                         "'in' needs a text, a list or an object on its right")
                elif right == "string" and left is not None and left != "string":
                    self.problems.append(f"{shown} looks for {_TYPE_NAMES[left]} in a text, which fails "
                                         f"{self.when}: only a text can be found in a text")
            left_node, left = right_node, right

    def call(self, node: ast.Call, name: str) -> str | None:
        if name in ("any_of", "all_of"):
            return self.words_test(node, name)
        kind = self.infer(node.args[0]) if node.args else None
        if name == "len":
            if kind is not None and kind not in ("string", "list", "object"):
                self.fails(node, f"takes the length of {_TYPE_NAMES[kind]}",
                           ": len() needs a text, a list or an object")
            return "number"
        if name in ("lower", "upper"):
            if kind is not None and kind != "string":
                self.fails(node, f"applies {name}() to {_TYPE_NAMES[kind]}", f": {name}() needs a text")
            return "string"
        return "number" if name == "number" else None

    def words_test(self, node: ast.Call, name: str) -> str:
        """any_of/all_of(text, words): the words are checked first, even when the text is null."""
        text, words = node.args
        kind = self.infer(text)
        if isinstance(words, (ast.List, ast.Tuple)):
            word_kinds = [self.infer(word) for word in words.elts]
            if any(word not in (None, "string") for word in word_kinds):
                self.fails(node, "lists a word that is not a text", f": {name}() needs a list of texts")
                return "boolean"
        elif (listed := self.infer(words)) is not None and listed != "list":
            self.fails(node, f"is given {_TYPE_NAMES[listed]} as its words",
                       f": {name}() needs a list of texts")
            return "boolean"
        if kind is not None and kind != "string":
            self.fails(node, f"searches {_TYPE_NAMES[kind]}", f": {name}() searches a text")
        return "boolean"


def _literal_type(value: Any) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return "string" if isinstance(value, str) else None


def _quoted(text: str) -> str:
    """'text', or "text" when it holds a single quote."""
    return f'"{text}"' if "'" in text and '"' not in text else f"'{text}'"


def _symbol(op: ast.cmpop) -> str:
    symbols = {ast.Eq: "==", ast.NotEq: "!=", ast.In: "in", ast.NotIn: "not in", **_ORDERING_SYMBOLS}
    return symbols.get(type(op), "?")


def _type_problems(expression: Expression, inputs: Mapping[str, InputSpec], when: str) -> list[str]:
    """Operations of a compiled expression that fail whenever they meet a value (see _TypeCheck);
    ``when`` says when that is ("at run time")."""
    check = _TypeCheck(expression.source.strip(), inputs, when)  # the tree's positions are in this text
    check.infer(expression.tree.body)
    return check.problems


Outcome = tuple[str, str]  # (step id, "completed" or "denied")


def _required_outcomes(template: Template) -> dict[str, frozenset[Outcome]]:
    """For each step, the outcomes of earlier steps it cannot run without (as the workflow's
    ``_skip_reason`` decides): a gate's ``on_denied`` step needs that gate denied; any other step
    needs every dependency completed (``join: all``) or what all its dependencies share (``any``)."""
    denial_gate = {target: step.id for step in template.steps for target in step.on_denied}
    found: dict[str, frozenset[Outcome]] = {}

    def needs(step_id: str) -> frozenset[Outcome]:  # every step it reads is in ``found`` already
        step = template.step(step_id)
        gate = denial_gate.get(step_id)
        per_dependency = (
            [found[gate] | {(gate, "denied")}] if gate is not None
            else [found[d] | {(d, "completed")} for d in step.depends_on]
        )
        if not per_dependency:
            return frozenset()
        if step.join == "all" or gate is not None:
            return frozenset().union(*per_dependency)
        return frozenset.intersection(*per_dependency)

    # Dependencies first, without recursion (a long chain must not exhaust Python's stack);
    # the graph is acyclic (checked before).
    for step in template.steps:
        pending = [step.id]
        while pending:
            current = pending[-1]
            if current in found:
                pending.pop()
                continue
            gate = denial_gate.get(current)
            before = [gate] if gate is not None else template.step(current).depends_on
            missing = [d for d in before if d not in found]
            if missing:
                pending.extend(missing)
            else:
                found[current] = needs(current)
                pending.pop()
    return found


def _conflicts(outcomes: frozenset[Outcome]) -> set[str]:
    """Gates this set needs both completed (approved) and denied."""
    return {step_id for step_id, outcome in outcomes if outcome == "denied" and (step_id, "completed") in outcomes}


def ancestors(template: Template, step_id: str) -> set[str]:
    """Every step that must finish before ``step_id`` can start."""
    depends_on = {step.id: step.depends_on for step in template.steps}  # template.step() is a scan
    found: set[str] = set()
    pending = list(depends_on[step_id])
    while pending:
        current = pending.pop()
        if current not in found:
            found.add(current)
            pending.extend(depends_on[current])
    return found


def validate_template(template: Template, *, agents: Collection[str], tools: Collection[str], source: str) -> None:
    problems = _Checker(template, agents, tools).run()
    if problems:
        raise TemplateError(source, problems)
