"""Load templates from YAML files, and check a run's inputs against a template."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from convergio.agents.catalog import _StrictLoader
from convergio.graphflow.template import Template
from convergio.graphflow.validation import Problem, TemplateError, validate_template


def _field_path(location: tuple[int | str, ...]) -> str:
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(template)"


def parse_template(
    data: Any, *, agents: Collection[str], tools: Collection[str], source: str = "<template>"
) -> Template:
    """Validate a template given as data; every problem is reported with its field path."""
    if not isinstance(data, Mapping):
        raise TemplateError(source, [Problem("(template)", "must be a mapping with name, version and steps")])
    try:
        template = Template.model_validate(data)
    except ValidationError as exc:
        problems = [
            Problem(_field_path(tuple(error["loc"])), error["msg"])
            for error in exc.errors()
        ]
        raise TemplateError(source, problems) from None
    validate_template(template, agents=agents, tools=tools, source=source)
    return template


def load_template_file(path: Path, *, agents: Collection[str], tools: Collection[str]) -> Template:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TemplateError(source, [Problem("(file)", f"cannot read: {exc.strerror}")]) from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - SafeLoader, no duplicate keys or aliases
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "(file)"
        raise TemplateError(source, [Problem(where, f"invalid YAML: {getattr(exc, 'problem', exc)}")]) from None
    return parse_template(data, agents=agents, tools=tools, source=source)


class InputError(ValueError):
    """A run's inputs do not fit its template; the message names each input."""


def resolve_inputs(template: Template, given: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults filled in; unknown, missing and mistyped inputs rejected together."""
    problems: list[str] = []
    for name in given:
        if name not in template.inputs:
            problems.append(f"inputs.{name}: not an input of {template.key} (known: {', '.join(template.inputs)})")
    resolved: dict[str, Any] = {}
    for name, spec in template.inputs.items():
        if name in given and given[name] is not None:
            value = given[name]
            if not spec.accepts(value):
                problems.append(f"inputs.{name}: expected {spec.type}, got {type(value).__name__}")
            resolved[name] = value
        elif spec.required:
            problems.append(f"inputs.{name}: required" + (f" ({spec.description})" if spec.description else ""))
        else:
            resolved[name] = spec.default
    if problems:
        raise InputError("; ".join(problems))
    return resolved


class TemplateRegistry:
    """Templates by name and version: the shipped ones plus any directory of custom ones."""

    def __init__(self, templates: Collection[Template] = ()) -> None:
        self._templates: dict[tuple[str, int], Template] = {}
        for template in templates:
            self.add(template)

    def add(self, template: Template) -> None:
        key = (template.name, template.version)
        if key in self._templates and self._templates[key] != template:
            raise TemplateError(template.key, [Problem("version", "this name and version exist with other content; bump the version")])
        self._templates[key] = template

    def get(self, name: str, version: int | None = None) -> Template:
        versions = sorted(v for (n, v) in self._templates if n == name)
        if not versions:
            raise KeyError(f"unknown template '{name}'; known: {', '.join(self.names())}")
        chosen = version if version is not None else versions[-1]
        if chosen not in versions:
            raise KeyError(f"template '{name}' has no version {chosen}; versions: {versions}")
        return self._templates[(name, chosen)]

    def names(self) -> list[str]:
        return sorted({name for name, _ in self._templates})

    def all(self) -> list[Template]:
        return [self._templates[key] for key in sorted(self._templates)]

    @classmethod
    def from_directories(cls, *directories: Path, agents: Collection[str], tools: Collection[str]) -> TemplateRegistry:
        registry = cls()
        for directory in directories:
            for path in sorted(directory.glob("*.y*ml")):
                registry.add(load_template_file(path, agents=agents, tools=tools))
        return registry


def shipped_templates_dir() -> Path:
    return Path(str(resources.files("convergio") / "templates"))


@lru_cache
def default_registry() -> TemplateRegistry:
    from convergio.agents.catalog import default_catalog
    from convergio.tools.registry import tool_names

    return TemplateRegistry.from_directories(
        shipped_templates_dir(), agents=default_catalog().names(), tools=tool_names()
    )
