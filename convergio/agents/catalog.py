"""The agent catalog: :class:`AgentDefinition` objects loaded from YAML or Markdown files.

A definition file is named after its agent (``cfo.yaml`` defines ``name: cfo``) and is either

- YAML (``*.yaml`` / ``*.yml``): a mapping with the :class:`AgentDefinition` fields; or
- Markdown (``*.md``): YAML front matter between ``---`` lines, and a body that is the
  agent's ``system_message`` (the front matter must then not set ``system_message``).

Every problem is an :class:`AgentCatalogError` naming the file, the field and the problem::

    agents/cfo.yaml: complexity: Input should be less than or equal to 5

:meth:`AgentCatalog.from_directories` loads several directories; a later directory replaces
agents of the same name from earlier ones (user overrides of the shipped definitions).
:func:`default_catalog` is the shipped catalog, read from ``convergio/agents/definitions``
through :mod:`importlib.resources` so it works from an installed wheel.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from pydantic import ValidationError

from convergio.agents.definition import AgentDefinition

__all__ = [
    "DEFINITION_SUFFIXES",
    "AgentCatalog",
    "AgentCatalogError",
    "UnknownAgentError",
    "default_catalog",
    "load_definition_file",
    "parse_definition",
    "shipped_definitions_dir",
]

DEFINITION_SUFFIXES: tuple[str, ...] = (".yaml", ".yml", ".md")

Source = Path | Traversable


class AgentCatalogError(ValueError):
    """A definition file (or a set of them) is invalid.

    ``str()`` is ``"<file>[:<line>]: <field>: <problem>"`` (one line per problem). The first
    problem is also available as ``file``, ``field`` and ``problem``.
    """

    def __init__(
        self, file: str, problem: str, *, field: str | None = None, line: int | None = None,
        more: Iterable[str] = (),
    ) -> None:
        self.file = file
        self.field = field
        self.problem = problem
        self.line = line
        where = f"{file}:{line}" if line is not None else file
        first = f"{where}: {field}: {problem}" if field else f"{where}: {problem}"
        self.lines = [first, *more]
        super().__init__("\n".join(self.lines))


class UnknownAgentError(KeyError):
    """No agent of that name is in the catalog."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(name)
        self.name = name
        self.known = known

    def __str__(self) -> str:  # KeyError would show the repr of the key only
        return f"unknown agent {self.name!r}; known agents: {', '.join(self.known) or 'none'}"


# --- parsing -----------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys instead of silently keeping the last one, and
    anchors and aliases: no shipped file uses them, and a few nested aliases ("billion laughs")
    expand to billions of values once the data is validated or dumped."""

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or event.anchor is not None:
            sign = "*" if isinstance(event, yaml.AliasEvent) else "&"
            raise yaml.composer.ComposerError(
                None, None,
                f"found {sign}{event.anchor}: anchors (&) and aliases (*) are not allowed; "
                "write the value out",
                event.start_mark,
            )
        return super().compose_node(parent, index)  # type: ignore[no-untyped-call]


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r} (first on line {seen[key] + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _load_yaml(text: str, file: str, line_offset: int = 0) -> Any:
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 + line_offset if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        detail = f"{context}: {problem}" if context and context not in problem else problem
        raise AgentCatalogError(file, f"invalid YAML: {detail}", line=line) from exc


def _split_front_matter(text: str, file: str) -> tuple[str, str, int]:
    """(front matter, body, line number of the body's first line) of a Markdown file."""
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        raise AgentCatalogError(
            file, "a Markdown definition must start with YAML front matter between '---' lines", line=1
        )
    for index in range(1, len(lines)):
        if lines[index].strip() in ("---", "..."):
            return "".join(lines[1:index]), "".join(lines[index + 1 :]), index + 2
    raise AgentCatalogError(file, "front matter opened with '---' on line 1 is never closed", line=1)


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<definition>"


_FIELDS = sorted(AgentDefinition.model_fields)


def _validation_error(file: str, exc: ValidationError) -> AgentCatalogError:
    problems: list[tuple[str, str]] = []
    for err in exc.errors():
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = f"unknown field (allowed: {', '.join(_FIELDS)})"
        problems.append((_field_path(tuple(err["loc"])), msg))
    (field, problem), rest = problems[0], problems[1:]
    return AgentCatalogError(file, problem, field=field, more=[f"{file}: {f}: {p}" for f, p in rest])


def parse_definition(text: str, file: str, *, markdown: bool, stem: str | None = None) -> AgentDefinition:
    """Parse one definition file's text. ``file`` names it in errors; if ``stem`` is given,
    the agent's name must equal it."""
    text = text.removeprefix("\ufeff")
    body: str | None = None
    if markdown:
        front, body, body_line = _split_front_matter(text, file)
        data = _load_yaml(front, file, line_offset=1)
    else:
        data = _load_yaml(text, file)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        what = "front matter" if markdown else "file"
        raise AgentCatalogError(
            file, f"the {what} must be a YAML mapping of AgentDefinition fields, got {type(data).__name__}"
        )
    bad_keys = [key for key in data if not isinstance(key, str)]
    if bad_keys:
        raise AgentCatalogError(file, f"field names must be strings, got {bad_keys[0]!r}")
    if markdown:
        assert body is not None
        body = body.strip()
        if "system_message" in data:
            if body:
                raise AgentCatalogError(
                    file,
                    "set in the front matter and also given as the Markdown body; "
                    f"keep only the body (line {body_line} onwards)",
                    field="system_message",
                )
        elif not body:
            raise AgentCatalogError(
                file, "missing: the Markdown body (the system message) is empty", field="system_message"
            )
        else:
            data["system_message"] = body
    try:
        definition = AgentDefinition.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(file, exc) from exc
    if stem is not None and definition.name != stem:
        raise AgentCatalogError(
            file, f"{definition.name!r} must equal the file name stem {stem!r}", field="name"
        )
    return definition


def _check_tools(definition: AgentDefinition, file: str) -> None:
    from convergio.tools.registry import tool_names  # lazy: tools are independent of agents

    known = tool_names()
    for index, tool in enumerate(definition.tools):
        if tool not in known:
            raise AgentCatalogError(
                file,
                f"unknown tool {tool!r} (registered tools: {', '.join(known) or 'none'})",
                field=f"tools[{index}]",
            )


def _suffix(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:].lower() if dot > 0 else ""


def _stem(name: str) -> str:
    dot = name.rfind(".")
    return name[:dot] if dot > 0 else name


def load_definition_file(path: Source) -> AgentDefinition:
    """Load and validate one ``.yaml``/``.yml``/``.md`` definition file."""
    file = str(path)
    suffix = _suffix(path.name)
    if suffix not in DEFINITION_SUFFIXES:
        raise AgentCatalogError(file, f"not a definition file (expected one of {', '.join(DEFINITION_SUFFIXES)})")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AgentCatalogError(file, f"cannot read the file: {exc}") from exc
    definition = parse_definition(text, file, markdown=suffix == ".md", stem=_stem(path.name))
    _check_tools(definition, file)
    return definition


def _definition_files(directory: Source) -> list[Source]:
    return sorted(
        (
            entry
            for entry in directory.iterdir()
            if not entry.name.startswith(".") and _suffix(entry.name) in DEFINITION_SUFFIXES and entry.is_file()
        ),
        key=lambda entry: entry.name,
    )


def _load_directory(directory: Source) -> dict[str, tuple[AgentDefinition, str]]:
    """name -> (definition, file) for one directory; two files defining one name is an error."""
    found: dict[str, tuple[AgentDefinition, str]] = {}
    for entry in _definition_files(directory):
        definition = load_definition_file(entry)
        if definition.name in found:
            other = found[definition.name][1]
            raise AgentCatalogError(
                str(entry),
                f"duplicate agent {definition.name!r}: also defined in {other}",
                field="name",
            )
        found[definition.name] = (definition, str(entry))
    return found


# --- the catalog -------------------------------------------------------------------------------


class AgentCatalog:
    """An immutable set of agent definitions, by name."""

    def __init__(self, definitions: Iterable[AgentDefinition] = (), *, sources: Mapping[str, str] | None = None) -> None:
        by_name: dict[str, AgentDefinition] = {}
        for definition in definitions:
            if definition.name in by_name:
                raise AgentCatalogError(
                    (sources or {}).get(definition.name, "<catalog>"),
                    f"duplicate agent {definition.name!r}",
                    field="name",
                )
            by_name[definition.name] = definition
        self._agents: Mapping[str, AgentDefinition] = MappingProxyType(dict(sorted(by_name.items())))
        self._sources: Mapping[str, str] = MappingProxyType(
            {name: (sources or {}).get(name, "<catalog>") for name in self._agents}
        )

    @classmethod
    def from_directories(cls, *directories: Source, missing_ok: bool = False) -> AgentCatalog:
        """Load every ``*.yaml``/``*.yml``/``*.md`` file of each directory (not recursive).

        Within one directory, two files defining the same agent are an error; across
        directories, a later directory's agent replaces an earlier one of the same name.
        A missing directory is an error unless ``missing_ok``. Collaborators must name agents
        of the resulting catalog.
        """
        merged: dict[str, tuple[AgentDefinition, str]] = {}
        for directory in directories:
            if not directory.is_dir():
                if missing_ok and not Path(str(directory)).exists():
                    continue
                raise AgentCatalogError(str(directory), "not a directory of agent definitions")
            merged.update(_load_directory(directory))
        for name, (definition, file) in merged.items():
            for index, collaborator in enumerate(definition.collaborators):
                if collaborator not in merged:
                    raise AgentCatalogError(
                        file,
                        f"unknown agent {collaborator!r} (known agents: {', '.join(sorted(merged))})",
                        field=f"collaborators[{index}]",
                    )
        return cls(
            (definition for definition, _ in merged.values()),
            sources={name: file for name, (_, file) in merged.items()},
        )

    def get(self, name: str) -> AgentDefinition:
        try:
            return self._agents[name]
        except KeyError:
            raise UnknownAgentError(name, self.names()) from None

    __getitem__ = get

    def source(self, name: str) -> str:
        """The file the agent was loaded from."""
        self.get(name)
        return self._sources[name]

    def names(self) -> list[str]:
        return list(self._agents)

    def all(self) -> list[AgentDefinition]:
        return list(self._agents.values())

    def __contains__(self, name: object) -> bool:
        return name in self._agents

    def __iter__(self) -> Iterator[AgentDefinition]:
        return iter(self._agents.values())

    def __len__(self) -> int:
        return len(self._agents)

    def __repr__(self) -> str:
        return f"AgentCatalog({', '.join(self._agents)})"


def shipped_definitions_dir() -> Traversable:
    """The shipped definitions (a ``Path`` for a regular install)."""
    return resources.files("convergio.agents") / "definitions"


@functools.lru_cache(maxsize=1)
def default_catalog() -> AgentCatalog:
    """The shipped agents; loaded once."""
    return AgentCatalog.from_directories(shipped_definitions_dir())
