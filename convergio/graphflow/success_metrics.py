"""Success metrics: the named targets a template sets, measured when the run ends.

A metric with a ``check`` (an expression in the template language over ``inputs``, ``steps``
and ``run``) is met when the check holds on the finished run; one without a check is listed
for a person to judge. Pure functions: the workflow measures its metrics in workflow code.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from convergio.graphflow.expressions import DEFAULT_ROOTS, ExpressionError, compile_expression
from convergio.graphflow.run_models import MetricResult
from convergio.graphflow.template import SuccessMetric, Template

METRIC_ROOTS: tuple[str, ...] = (*DEFAULT_ROOTS, "run")
# What ``run.<field>`` holds when the metrics are measured.
RUN_FIELDS: tuple[str, ...] = ("status", "cost_usd", "duration_s", "prompt_tokens", "completion_tokens")


def template_metrics(template: Template) -> Iterator[tuple[str, str | None, SuccessMetric]]:
    """(field path, step id or None for the run's own, metric) of every metric, in template order."""
    for position, metric in enumerate(template.success_metrics):
        yield f"success_metrics[{position}]", None, metric
    for index, step in enumerate(template.steps):
        for position, metric in enumerate(step.success_metrics):
            yield f"steps[{index}].success_metrics[{position}]", step.id, metric


def measure(template: Template, context: Mapping[str, Any]) -> list[MetricResult]:
    """Every metric of the template against the finished run (``context``: inputs, steps, run)."""
    results = []
    for _, step_id, metric in template_metrics(template):
        met: bool | None = None
        note = "" if metric.check else "no check: for a person to judge"
        if metric.check:
            try:
                met = compile_expression(metric.check, METRIC_ROOTS).test(context)
            except ExpressionError as exc:
                note = f"could not be measured: {exc}"
        results.append(
            MetricResult(
                name=metric.name, step_id=step_id, description=metric.description, target=metric.target,
                check=metric.check, met=met, note=note,
            )
        )
    return results
