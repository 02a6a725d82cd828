"""When the offline client calls a tool: only when the task names it and gives its arguments.

The offline client is not a language model, so it cannot decide on its own that a tool would
help. It follows the task instead: a task that names an offered tool (``financial_model``) and
writes each required parameter with a JSON value (``initial_investment: 1200000``,
``cash_flows = [250000, 550000]``, ``discount_rate of 0.1``) gets that tool call, once. After
the tools answered, it writes its answer from their results like from any other material.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from autogen_core import FunctionCall
from autogen_core.tools import Tool, ToolSchema

# A JSON value after "name", "name:", "name =", "name of" or "name is": a number, a list, a
# quoted string, true/false/null. Lists may not nest (enough for tool arguments in a task).
_VALUE = r'(?P<value>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|\[[^\[\]]*\]|"[^"]*"|true|false|null)'


def plan_tool_calls(task: str, tools: Sequence[Tool | ToolSchema]) -> list[FunctionCall]:
    """The calls the task asks for: every offered tool it names whose required arguments it gives."""
    calls = []
    for tool in tools:
        schema = tool.schema if isinstance(tool, Tool) else tool
        name = schema["name"]
        if not re.search(rf"\b{re.escape(name)}\b", task):
            continue
        arguments = _arguments(task, schema.get("parameters") or {})
        if arguments is not None:
            call_id = f"call_{len(calls) + 1}"
            calls.append(FunctionCall(id=call_id, name=name, arguments=json.dumps(arguments)))
    return calls


def _arguments(task: str, parameters: dict[str, Any]) -> dict[str, Any] | None:
    """Each parameter the task gives a value for; None when a required one is missing."""
    found: dict[str, Any] = {}
    for parameter in parameters.get("properties", {}):
        spelled = r"[ _]".join(re.escape(part) for part in parameter.split("_"))
        match = re.search(rf"\b{spelled}\b\s*(?::|=|\bof\b|\bis\b)?\s*{_VALUE}", task, re.IGNORECASE)
        if match:
            try:
                found[parameter] = json.loads(match.group("value"))
            except ValueError:
                continue
    if any(required not in found for required in parameters.get("required", [])):
        return None
    return found
