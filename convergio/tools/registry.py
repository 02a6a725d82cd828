"""The tool registry: plain Python functions, registered by name, with Pydantic I/O models.

A tool is a function taking exactly one Pydantic model (its input) and returning a Pydantic
model (its output)::

    @register_tool("break_even", "Units and revenue needed to cover fixed costs.")
    def break_even(params: BreakEvenInput) -> BreakEvenOutput: ...

:func:`run_tool` validates a JSON-like ``dict`` of arguments against the input model (bad
input raises :class:`ToolInputError` naming the tool and the field) and returns the output
model dumped to a ``dict``. :func:`as_autogen_tool` wraps a tool as an
``autogen_core.tools.FunctionTool`` whose JSON schema is the input model's, so an
``AssistantAgent`` can call it.

The shipped tools are registered by :func:`load_builtin_tools`, which :func:`get_tool`,
:func:`tool_names`, :func:`run_tool` and :func:`as_autogen_tool` call lazily (the tool
modules import this one, so it must not import them at module level).
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import math
import json
import sys
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from autogen_core import CancellationToken
from autogen_core.tools import FunctionTool, ToolSchema
from pydantic import BaseModel, ValidationError

__all__ = [
    "BUILTIN_TOOL_MODULES",
    "ToolInputError",
    "ToolSpec",
    "UnknownToolError",
    "as_autogen_tool",
    "format_validation_error",
    "get_tool",
    "load_builtin_tools",
    "register_tool",
    "run_tool",
    "tool_names",
]

# Modules whose import registers the shipped tools.
BUILTIN_TOOL_MODULES: tuple[str, ...] = ("convergio.tools.financial",)

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class ToolSpec:
    """A registered tool."""

    name: str
    description: str
    function: Callable[[Any], Any]
    input_model: type[BaseModel]
    output_model: type[BaseModel]

    def parameters_schema(self) -> dict[str, Any]:
        """JSON schema of the input model (what a model sees as the tool's parameters)."""
        return self.input_model.model_json_schema()


class UnknownToolError(KeyError):
    """No tool is registered under that name."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(name)
        self.name = name
        self.known = known

    def __str__(self) -> str:  # KeyError would show the repr of the key only
        known = ", ".join(self.known) or "none"
        return f"unknown tool {self.name!r} (registered tools: {known})"


def _loc(loc: tuple[int | str, ...]) -> str:
    """('cash_flows', 2) -> 'cash_flows[2]'; ('a', 'b') -> 'a.b'; () -> '<input>'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "<input>"


def format_validation_error(exc: ValidationError, prefix: str) -> list[str]:
    """One ``"<prefix>: <field path>: <problem>"`` line per Pydantic error."""
    return [f"{prefix}: {_loc(tuple(err['loc']))}: {err['msg']}" for err in exc.errors()]


class ToolInputError(ValueError):
    """Arguments for a tool failed validation against its input model.

    ``str()`` has one line per problem: ``financial_model: discount_rate: Input should be …``.
    """

    def __init__(self, tool: str, problems: list[tuple[str, str]]) -> None:
        self.tool = tool
        self.problems = problems  # (field path, message)
        self.fields = [field for field, _ in problems]
        super().__init__("\n".join(f"{tool}: {field}: {message}" for field, message in problems))

    @classmethod
    def from_validation_error(cls, tool: str, exc: ValidationError) -> ToolInputError:
        return cls(tool, [(_loc(tuple(err["loc"])), err["msg"]) for err in exc.errors()])


_REGISTRY: dict[str, ToolSpec] = {}
_builtins_loaded = False


def _model_types(
    function: Callable[..., Any], localns: Mapping[str, Any] | None = None
) -> tuple[type[BaseModel], type[BaseModel]]:
    where = f"{function.__module__}.{function.__qualname__}"
    params = list(inspect.signature(function).parameters.values())
    if len(params) != 1 or params[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        raise TypeError(f"tool function {where} must take exactly one positional argument (a Pydantic model)")
    try:
        hints = typing.get_type_hints(function, localns=dict(localns or {}))
    except NameError as exc:
        raise TypeError(f"tool function {where}: cannot resolve its annotations ({exc})") from exc
    input_model = hints.get(params[0].name)
    output_model = hints.get("return")
    if not (inspect.isclass(input_model) and issubclass(input_model, BaseModel)):
        raise TypeError(f"tool function {where}: its argument must be annotated with a Pydantic model")
    if not (inspect.isclass(output_model) and issubclass(output_model, BaseModel)):
        raise TypeError(f"tool function {where}: its return annotation must be a Pydantic model")
    return input_model, output_model


def register_tool(name: str, description: str) -> Callable[[F], F]:
    """Decorator registering ``function`` as tool ``name``; returns the function unchanged.

    The input model is the annotation of the function's single argument, the output model its
    return annotation (both Pydantic models). Registering a different function under a name
    already taken raises ``ValueError``; re-registering the same function (module reload)
    replaces it.
    """
    if not name.isidentifier() or name != name.lower():
        raise ValueError(f"tool name must be a lower-case identifier, got {name!r}")
    if not description.strip():
        raise ValueError(f"tool {name!r} needs a description")
    # Names visible where the decorator is used, so string annotations of models defined
    # inside a function (``from __future__ import annotations``) still resolve.
    caller_locals = dict(sys._getframe(1).f_locals)

    def decorator(function: F) -> F:
        input_model, output_model = _model_types(function, caller_locals)
        existing = _REGISTRY.get(name)
        if existing is not None and (
            existing.function.__module__,
            existing.function.__qualname__,
        ) != (function.__module__, function.__qualname__):
            raise ValueError(
                f"tool {name!r} is already registered by "
                f"{existing.function.__module__}.{existing.function.__qualname__}"
            )
        _REGISTRY[name] = ToolSpec(
            name=name,
            description=description.strip(),
            function=function,
            input_model=input_model,
            output_model=output_model,
        )
        return function

    return decorator


def load_builtin_tools() -> None:
    """Import the modules that register the shipped tools (once)."""
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True  # set first: the imported modules import this module
    try:
        for module in BUILTIN_TOOL_MODULES:
            importlib.import_module(module)
    except BaseException:
        _builtins_loaded = False
        raise


def tool_names() -> list[str]:
    """Names of all registered tools, sorted."""
    load_builtin_tools()
    return sorted(_REGISTRY)


def get_tool(name: str) -> ToolSpec:
    load_builtin_tools()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownToolError(name, sorted(_REGISTRY)) from None


def validate_arguments(name: str, arguments: Mapping[str, Any] | BaseModel) -> BaseModel:
    """``arguments`` as the tool's input model; :class:`ToolInputError` if they are invalid."""
    spec = get_tool(name)
    if isinstance(arguments, spec.input_model):
        return arguments
    if isinstance(arguments, BaseModel):
        arguments = arguments.model_dump()
    if not isinstance(arguments, Mapping):
        raise ToolInputError(name, [("<input>", f"arguments must be an object, got {type(arguments).__name__}")])
    try:
        return spec.input_model.model_validate(dict(arguments))
    except ValidationError as exc:
        raise ToolInputError.from_validation_error(name, exc) from exc


async def run_tool(name: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``arguments``, run tool ``name`` and return its output as a JSON-ready dict.

    Raises :class:`UnknownToolError`, :class:`ToolInputError`, or whatever the tool raises.
    """
    spec = get_tool(name)
    params = validate_arguments(name, arguments)
    try:
        result = spec.function(params)
        if inspect.isawaitable(result):
            result = await result
    except ArithmeticError as exc:  # overflow, division by zero: these arguments never compute
        raise ToolInputError(name, [("(arguments)", f"the numbers are out of range ({exc})")]) from exc
    if not isinstance(result, spec.output_model):
        result = spec.output_model.model_validate(result)
    output = result.model_dump(mode="python")
    if unusable := _non_finite(output):
        problem = "the result is not a finite number; the inputs are out of range"
        raise ToolInputError(name, [(unusable, problem)])
    return result.model_dump(mode="json")


def _non_finite(value: Any, path: str = "") -> str | None:
    """The path of the first infinite or NaN number in a tool's output, if any."""
    if isinstance(value, float) and not math.isfinite(value):
        return path or "(result)"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if found := _non_finite(item, f"{path}.{key}" if path else str(key)):
            return found
    return None


class RegisteredFunctionTool(FunctionTool):
    """A ``FunctionTool`` for a registered tool.

    Its argument model is the tool's own input model (so the schema shown to the model
    carries every constraint and description), invalid arguments raise
    :class:`ToolInputError`, and results are rendered as JSON for the model.
    """

    def __init__(self, spec: ToolSpec) -> None:
        fields = spec.input_model.model_fields

        async def call(**kwargs: Any) -> dict[str, Any]:
            return await run_tool(spec.name, kwargs)

        # FunctionTool derives its argument model from the signature; give it one keyword
        # parameter per input field, then use the input model itself as the argument model.
        parameters = [
            inspect.Parameter(
                field_name,
                inspect.Parameter.KEYWORD_ONLY,
                default=inspect.Parameter.empty if info.is_required() else info.get_default(call_default_factory=True),
                annotation=Any,
            )
            for field_name, info in fields.items()
        ]
        call.__name__ = spec.name
        call.__qualname__ = spec.name
        call.__doc__ = spec.description
        call.__signature__ = inspect.Signature(parameters, return_annotation=dict[str, Any])  # type: ignore[attr-defined]
        call.__annotations__ = {field_name: Any for field_name in fields} | {"return": dict[str, Any]}
        super().__init__(call, description=spec.description, name=spec.name)
        self._args_type = spec.input_model
        self.spec = spec

    async def run_json(
        self, args: Mapping[str, Any], cancellation_token: CancellationToken, call_id: str | None = None
    ) -> Any:
        try:
            self._args_type.model_validate(dict(args))
        except ValidationError as exc:
            raise ToolInputError.from_validation_error(self.name, exc) from exc
        return await super().run_json(args, cancellation_token, call_id)

    async def run(self, args: BaseModel, cancellation_token: CancellationToken) -> Any:
        task = asyncio.ensure_future(run_tool(self.name, args.model_dump()))
        cancellation_token.link_future(task)
        return await task

    @functools.cached_property
    def schema(self) -> ToolSchema:  # type: ignore[override]
        """Built once: the input model never changes, and every model call sends the schema."""
        return super().schema

    def return_value_as_string(self, value: Any) -> str:
        if isinstance(value, dict):
            return json.dumps(value, ensure_ascii=False)
        return super().return_value_as_string(value)


def as_autogen_tool(name: str) -> FunctionTool:
    """Tool ``name`` as an AutoGen ``FunctionTool`` (for ``AssistantAgent(tools=[...])``)."""
    return RegisteredFunctionTool(get_tool(name))
