"""``{inputs.x}`` and ``{steps.y.output}`` placeholders in instructions and tool arguments.

Pure functions: they run inside workflow code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

PLACEHOLDER = re.compile(r"(?<!\{)\{(inputs|steps)\.([a-z_][a-z0-9_]*)((?:\.[a-z_][a-z0-9_]*)*)\}(?!\})")


# A name in single braces is what a placeholder with a typo looks like ({input.company},
# {inputs.Company}, {company}, { inputs.company }), and so is one left open ({inputs.company);
# without this check the typo would reach the agent as literal text.
_LOOKALIKE = re.compile(r"(?<!\{)\{\s*[A-Za-z_][\w-]*(?:\s*\.\s*[\w-]+)*\s*\}(?!\})")
_UNCLOSED = re.compile(r"(?<!\{)\{\s*(?:inputs|steps)\.[\w.-]+(?!\s*\})(?=[^\w.\-]|$)")


def placeholder_paths(text: str) -> list[tuple[str, str, tuple[str, ...]]]:
    """(root, key, the rest of the path) of each placeholder, e.g. ("steps", "market", ("output",))."""
    return [
        (match.group(1), match.group(2), tuple(filter(None, match.group(3).split("."))))
        for match in PLACEHOLDER.finditer(text)
    ]


def malformed_placeholders(text: str) -> list[str]:
    """Texts like ``{input.company}`` that look like a placeholder but are not one."""
    lookalikes = [match.group(0) for match in _LOOKALIKE.finditer(text)]
    unclosed = [match.group(0) for match in _UNCLOSED.finditer(text)]
    return [found for found in lookalikes if not PLACEHOLDER.fullmatch(found)] + unclosed


def _lookup(context: Mapping[str, Any], root: str, key: str, rest: str) -> Any:
    value: Any = context.get(root, {}).get(key)
    for part in filter(None, rest.split(".")):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _as_text(value: Any) -> str:
    if value is None:
        return "(not available)"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def render_text(text: str, context: Mapping[str, Any]) -> str:
    """Fill placeholders; ``{{`` and ``}}`` stand for literal braces."""
    filled = PLACEHOLDER.sub(lambda m: _as_text(_lookup(context, m.group(1), m.group(2), m.group(3))), text)
    return filled.replace("{{", "{").replace("}}", "}")


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """Tool arguments: a string that is exactly one placeholder keeps the raw value's type."""
    if isinstance(value, str):
        whole = PLACEHOLDER.fullmatch(value.strip())
        if whole:
            return _lookup(context, whole.group(1), whole.group(2), whole.group(3))
        return render_text(value, context)
    if isinstance(value, list):
        return [render_value(item, context) for item in value]
    if isinstance(value, dict):
        return {key: render_value(item, context) for key, item in value.items()}
    return value
