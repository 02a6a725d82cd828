"""The run report in Markdown: every step's output, who produced it and on which model."""

from __future__ import annotations

from collections.abc import Sequence

from convergio.graphflow.run_models import AuditEntry, MetricResult, StepReport, TurnRecord


def render_markdown(
    *,
    title: str,
    workflow_id: str,
    status: str,
    steps: list[StepReport],
    audit: list[AuditEntry],
    prompt_tokens: int,
    completion_tokens: int,
    cost_usd: float = 0.0,
    turns: Sequence[TurnRecord] = (),
    metrics: Sequence[MetricResult] = (),
) -> str:
    models: dict[str, list[str]] = {}
    for record in turns:
        step_models = models.setdefault(record.step_id, [])
        if record.model not in step_models:
            step_models.append(record.model)
    lines = [
        f"# {title}",
        "",
        f"Run `{workflow_id}` · **{status}** · {prompt_tokens} prompt + {completion_tokens} completion tokens"
        f" · ${cost_usd:.6f}",
        "",
        "| step | status | by | model | tokens | cost (USD) |",
        "|---|---|---|---|---|---|",
    ]
    for step in steps:
        by = ", ".join(dict.fromkeys(step.agents)) or "—"
        model = ", ".join(models.get(step.id, [])) or "—"
        tokens = step.prompt_tokens + step.completion_tokens
        lines.append(f"| {step.title} | {step.status} | {by} | {model} | {tokens} | {step.cost_usd:.6f} |")
    if metrics:
        titles = {step.id: step.title for step in steps}
        lines += ["", "## Success metrics", "", "| metric | step | target | result |", "|---|---|---|---|"]
        for metric in metrics:
            name = f"{metric.name}: {metric.description}" if metric.description else metric.name
            step_title = titles.get(metric.step_id, "—") if metric.step_id else "whole run"
            result = {True: "met", False: "**not met**", None: "—"}[metric.met]
            if metric.note:
                result += f" ({metric.note})"
            cells = (name, step_title, metric.target or "—", result)
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    for step in steps:
        if step.output is None and step.error is None:
            continue
        by = f" · by {', '.join(dict.fromkeys(step.agents))}" if step.agents else ""
        on = f" · on {', '.join(models[step.id])}" if models.get(step.id) else ""
        lines += ["", f"## {step.title}", "", f"*{step.status}{by}{on}*", ""]
        if step.output:
            lines.append(_demote_headings(step.output))
        tools_used = [
            f"- `{result.name}`{' (error)' if result.is_error else ''}: {result.content.splitlines()[0]}"
            for record in turns if record.step_id == step.id
            for result in record.tool_results if result.content
        ]
        if tools_used:
            lines += ["", "**Tools used**", "", *tools_used]
        if step.sources:
            lines += ["", "**Sources**", ""]
            lines += [
                f"- [{src.marker}] {src.source if src.kind == 'chunk' else 'memory of ' + src.source}"
                f" (score {src.score:.2f}): {src.excerpt}"
                for src in step.sources
            ]
        if step.error:
            lines.append(f"> **Error:** {step.error}")
        for note in step.quality_notes:
            lines.append(f"> quality: {note}")
    if audit:
        lines += ["", "## Audit trail", ""]
        for entry in audit:
            who = f"{entry.actor} ({entry.role})" if entry.actor else "system"
            gate = f" gate `{entry.gate_id}`" if entry.gate_id else ""
            comment = f": {entry.comment}" if entry.comment else ""
            lines.append(f"- {entry.at:%Y-%m-%d %H:%M:%S} · {entry.kind}{gate} · {who} · {entry.outcome}{comment}")
    return "\n".join(lines) + "\n"


def _demote_headings(text: str) -> str:
    """Step outputs use ## headings; nest them under the step's own heading."""
    return "\n".join(("#" + line) if line.startswith("#") else line for line in text.splitlines())
