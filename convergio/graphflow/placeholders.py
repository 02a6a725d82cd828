"""``{inputs.x}`` and ``{steps.y.output}`` placeholders in instructions and tool arguments.

Pure functions: they run inside workflow code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from typing import Any

NAME = r"[a-z_][a-z0-9_]*"
"""What a placeholder can name: an input, a step id, a field."""
PLACEHOLDER = re.compile(rf"(?<!\{{)\{{(inputs|steps)\.({NAME})((?:\.{NAME})*)\}}(?!\}})")
_NAME = re.compile(NAME)


# What a placeholder with a typo looks like: a name in single braces ({input.company},
# {inputs.Company}, { inputs.company }, {company} for an input), or one left open
# ({inputs.company). Without this check the typo would reach the agent as literal text. Other
# braced words ({TBD}, /api/{id}, ${VAR}) are left alone: they are text.
_LOOKALIKE = re.compile(r"(?<!\{)\{\s*(?P<first>[A-Za-z_][\w-]*)(?P<rest>(?:\s*\.\s*[\w-]+)*)\s*\}(?!\})")
_ROOT_SPELLINGS = frozenset({"inputs", "input", "steps", "step"})
_ROOTS = frozenset({"inputs", "steps"})  # {inputs} alone names no value either
_UNCLOSED = re.compile(r"(?<!\{)\{\s*(?:inputs|steps)\.[\w.-]+(?!\s*\})(?=[^\w.\-]|$)")
# ... or cut short ({inputs.}, {inputs.company.}), closed twice or more ({inputs.company}},
# {inputs.company}}}), or opened twice and closed once ({{inputs.company}).
_BROKEN = re.compile(
    r"(?<!\{)\{\s*(?:inputs|steps)\.(?:[\w-]+\.)*\s*\}"  # cut short
    r"|(?<!\{)\{(?:inputs|steps)\.[\w.-]+\}{2,}"  # closed twice or more
    r"|(?<!\{)\{\{\s*(?:inputs|steps)\.[\w.-]+\s*\}(?!\})"  # opened twice
)


def placeholder_paths(text: str) -> list[tuple[str, str, tuple[str, ...]]]:
    """(root, key, the rest of the path) of each placeholder, e.g. ("steps", "market", ("output",))."""
    return [
        (match.group(1), match.group(2), tuple(filter(None, match.group(3).split("."))))
        for match in PLACEHOLDER.finditer(text)
    ]


def is_placeholder_name(name: str) -> bool:
    """Whether ``{inputs.<name>}`` can refer to ``name``."""
    return _NAME.fullmatch(name) is not None


def malformed_placeholders(text: str, names: Collection[str] = ()) -> list[str]:
    """Texts like ``{input.company}`` that look like a placeholder but are not one; ``names``
    (the template's inputs and step ids) make a bare ``{company}`` one of them."""
    known = {name.casefold() for name in names}
    found = [
        match.group(0)
        for match in _LOOKALIKE.finditer(text)
        if not PLACEHOLDER.fullmatch(match.group(0))
        and (match.group("first").casefold() in _ROOT_SPELLINGS if match.group("rest")
             else match.group("first").casefold() in known | _ROOTS)
    ]
    return found + [match.group(0) for pattern in (_UNCLOSED, _BROKEN) for match in pattern.finditer(text)]


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


def _unescape(text: str) -> str:
    return text.replace("{{", "{").replace("}}", "}")


def render_text(text: str, context: Mapping[str, Any]) -> str:
    """Fill placeholders; ``{{`` and ``}}`` in ``text`` stand for literal braces.

    Only the text between placeholders is unescaped: a filled-in value (JSON, a user's
    input) arrives verbatim, braces and all.
    """
    parts: list[str] = []
    end = 0
    for match in PLACEHOLDER.finditer(text):
        parts.append(_unescape(text[end:match.start()]))
        parts.append(_as_text(_lookup(context, match.group(1), match.group(2), match.group(3))))
        end = match.end()
    parts.append(_unescape(text[end:]))
    return "".join(parts)


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
