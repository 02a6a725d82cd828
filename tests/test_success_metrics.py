"""Success metrics: measured on a finished run's data, shown in the result and the report."""

from __future__ import annotations

import copy
from datetime import datetime, timezone

from convergio.agents.catalog import default_catalog
from convergio.graphflow.loader import parse_template
from convergio.graphflow.report import render_markdown
from convergio.graphflow.run_models import StepReport
from convergio.graphflow.success_metrics import measure
from convergio.tools.registry import tool_names
from tests.test_templates import VALID

METRICS = [
    {"name": "approved", "description": "Signed off", "target": "approved",
     "check": 'steps.sign_off.status == "completed"'},
    {"name": "cheap", "target": "under $1", "check": "run.cost_usd < 1"},
    {"name": "judged", "description": "The board likes it"},
    {"name": "broken", "check": "run.cost_usd / 0 > 0"},  # division by zero: cannot be measured
]


def template():  # noqa: ANN201
    data = copy.deepcopy(VALID)
    data["success_metrics"] = METRICS
    data["steps"][0]["success_metrics"] = [{"name": "covered", "check": 'all_of(steps.research.output, ["Market"])'}]
    return parse_template(data, agents=default_catalog().names(), tools=tool_names(), source="metrics.yaml")


def context(*, gate: str, output: str, cost: float) -> dict:
    steps = {step_id: {"status": "completed", "output": None} for step_id in ("research", "model", "plan")}
    steps["research"]["output"] = output
    steps["sign_off"] = {"status": gate, "output": None}
    run = {"status": "completed", "cost_usd": cost, "duration_s": 60.0, "prompt_tokens": 1, "completion_tokens": 1}
    return {"inputs": {"company": "Acme", "budget": 10}, "steps": steps, "run": run}


def test_metrics_are_measured_on_the_finished_run() -> None:
    good = measure(template(), context(gate="completed", output="## Market\nBig.", cost=0.2))
    assert [(m.step_id, m.name, m.met) for m in good] == [
        (None, "approved", True), (None, "cheap", True), (None, "judged", None), (None, "broken", None),
        ("research", "covered", True),
    ]
    assert good[2].note == "no check: for a person to judge"
    assert good[3].note.startswith("could not be measured: ")
    bad = measure(template(), context(gate="denied", output="Nothing useful.", cost=3.0))
    assert {m.name: m.met for m in bad} == {"approved": False, "cheap": False, "judged": None, "broken": None,
                                            "covered": False}


def test_the_report_lists_each_metric_with_its_result() -> None:
    metrics = measure(template(), context(gate="denied", output="## Market", cost=0.2))
    step = StepReport(
        id="research", title="Research", kind="agent", status="completed", agents=["market_analyst"], output="x",
        data=None, score=None, iterations=1, revisions=0, prompt_tokens=1, completion_tokens=1,
        started_at=datetime.now(timezone.utc), duration_s=1.0, quality_notes=[], error=None,
    )
    markdown = render_markdown(
        title="T", workflow_id="w", status="completed", steps=[step], audit=[], prompt_tokens=1,
        completion_tokens=1, metrics=metrics,
    )
    assert "## Success metrics" in markdown
    assert "| approved: Signed off | whole run | approved | **not met** |" in markdown
    assert "| cheap | whole run | under $1 | met |" in markdown
    assert "| judged: The board likes it | whole run | — | — (no check: for a person to judge) |" in markdown
    assert "| covered | Research | — | met |" in markdown
    assert "could not be measured" in markdown
    no_metrics = render_markdown(title="T", workflow_id="w", status="completed", steps=[step], audit=[],
                                 prompt_tokens=1, completion_tokens=1)
    assert "Success metrics" not in no_metrics
