"""The small, safe expression language of GraphFlow ``when:`` conditions.

A template's conditional edges and steps carry expressions such as::

    steps.review.score >= 7 and steps.review.status == "completed"
    "growth" in steps.market_analysis.output or inputs.budget > 10000
    any_of(steps["market-analysis"].output, ["risk", "decline"])

They are evaluated inside Temporal workflow code, so evaluation is pure and
deterministic: no I/O, clock, randomness or imports, and user text is never handed
to Python's ``eval``/``exec``/``compile``. The source is parsed with
``ast.parse(mode="eval")``, checked against a strict whitelist once at compile time,
and then walked by the small interpreter below.

Grammar (everything else is rejected with an :class:`ExpressionError` at compile time)

- literals: numbers, strings, ``True``/``False``/``None`` and ``true``/``false``/``null``;
  lists and tuples (a tuple evaluates to a list, so ``(1, 2) == [1, 2]``).
- paths: a root name (``inputs``, ``steps`` or the roots the caller allows) followed by
  ``.name`` or ``[literal]`` parts, where the literal is a string or an integer
  (negative integers count from the end): ``steps["market-analysis"].output``,
  ``inputs.regions[0]``. ``a.b`` looks up the key ``"b"`` of the dict ``a``; Python
  attributes are never read. Names and keys starting with ``_`` are rejected.
- comparisons ``== != < <= > >= in not in``, chained as in Python (``1 < x <= 5``).
- ``and``, ``or``, ``not``, parentheses, unary ``-``/``+``, ``+ - * /`` on numbers.
- the functions ``len``, ``lower``, ``upper``, ``number``, ``any_of``, ``all_of``,
  called with positional arguments only.

Semantics

- A missing key, an index out of range, or a path through a non-container evaluates
  to ``None``. An unknown *root* name is a compile error.
- Ordering operators (``< <= > >=``) with ``None`` on either side evaluate to
  ``False`` instead of raising; ordering is otherwise defined only between two
  numbers or two strings (anything else is an evaluation error).
- ``==``/``!=`` follow Python equality.
- Membership: ``x in text`` is a case-sensitive substring test (use ``lower()`` for a
  case-insensitive one); ``x in list`` tests equality with an element; ``x in dict``
  tests for a key. ``None`` on the right behaves as an empty container (``in`` is
  ``False``, ``not in`` is ``True``), and ``None`` is never a substring.
- Arithmetic with ``None`` gives ``None`` (so ``inputs.budget * 2 > 100`` is ``False``
  when the budget is missing); with strings or booleans it is an evaluation error;
  division by zero is an evaluation error.
- ``and``/``or`` short-circuit and return an operand, as in Python.
- ``len(None)`` is 0; ``lower(None)``/``upper(None)`` are ``None``; ``number(x)``
  converts a number or numeric string to a finite float and gives ``None`` for
  anything else (including booleans); ``any_of(text, words)``/``all_of(text, words)``
  test case-insensitively whether any/all of the words occur in ``text`` and are
  ``False`` when ``text`` is ``None``.

Limits: at most :data:`MAX_LENGTH` characters and :data:`MAX_DEPTH` levels of nested
expression nodes.
"""

from __future__ import annotations

import ast
import keyword
import math
import operator
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_ROOTS",
    "FUNCTION_NAMES",
    "MAX_DEPTH",
    "MAX_LENGTH",
    "Expression",
    "ExpressionError",
    "compile_expression",
]

MAX_LENGTH = 1000
MAX_DEPTH = 32
DEFAULT_ROOTS: tuple[str, ...] = ("inputs", "steps")

_LITERAL_NAMES: dict[str, Any] = {"true": True, "false": False, "null": None}


class ExpressionError(ValueError):
    """An expression that cannot be compiled or evaluated.

    The message says what is wrong and where (``at column N``, or ``at line L, column
    N`` for multi-line sources); ``line`` and ``column`` (1-based) are also available
    as attributes when known.
    """

    def __init__(self, message: str, *, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


class _Problem(Exception):
    """Internal: a message waiting for the position of the node that caused it."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


# --------------------------------------------------------------------------- values


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if _is_number(value):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _lookup(base: Any, key: str | int) -> Any:
    """One path step: dict key or list index; anything missing is ``None``."""
    if isinstance(key, str):
        return base.get(key) if isinstance(base, Mapping) else None
    if isinstance(base, (list, tuple, str)):
        return base[key] if -len(base) <= key < len(base) else None
    if isinstance(base, Mapping):
        return base.get(key)
    return None


# --------------------------------------------------------------------------- functions


def _fn_len(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, (str, list, tuple, Mapping)):
        return len(value)
    raise _Problem(f"len() needs a string, list or object, got {_kind(value)}")


def _fn_lower(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return None if value is None else value.lower()
    raise _Problem(f"lower() needs a string, got {_kind(value)}")


def _fn_upper(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return None if value is None else value.upper()
    raise _Problem(f"upper() needs a string, got {_kind(value)}")


def _fn_number(value: Any) -> float | None:
    try:
        if _is_number(value):
            result = float(value)
        elif isinstance(value, str):
            result = float(value.strip())
        else:
            return None
    except (ValueError, OverflowError):
        return None
    return result if math.isfinite(result) else None


def _words_test(name: str, text: Any, words: Any, want_all: bool) -> bool:
    if words is None:
        words = []
    if not isinstance(words, (list, tuple)):
        raise _Problem(f"{name}() needs a list of words as its second argument, got {_kind(words)}")
    for word in words:
        if not isinstance(word, str):
            raise _Problem(f"{name}() words must be strings, got {_kind(word)}")
    if text is None:
        return False
    if not isinstance(text, str):
        raise _Problem(f"{name}() needs a string as its first argument, got {_kind(text)}")
    folded = text.casefold()
    hits = (word.casefold() in folded for word in words)
    return all(hits) if want_all else any(hits)


def _fn_any_of(text: Any, words: Any) -> bool:
    return _words_test("any_of", text, words, want_all=False)


def _fn_all_of(text: Any, words: Any) -> bool:
    return _words_test("all_of", text, words, want_all=True)


# name -> (number of arguments, implementation); order is the order in messages.
_FUNCTIONS: dict[str, tuple[int, Callable[..., Any]]] = {
    "len": (1, _fn_len),
    "lower": (1, _fn_lower),
    "upper": (1, _fn_upper),
    "number": (1, _fn_number),
    "any_of": (2, _fn_any_of),
    "all_of": (2, _fn_all_of),
}
FUNCTION_NAMES: tuple[str, ...] = tuple(_FUNCTIONS)
_ALLOWED_FUNCTIONS = "allowed: " + ", ".join(FUNCTION_NAMES)
_PRIVATE = "names starting with '_' are private"

# --------------------------------------------------------------------------- operators

ARITHMETIC: dict[type[ast.operator], str] = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_OTHER_OPERATORS: dict[type[ast.AST], str] = {
    ast.Pow: "**",
    ast.Mod: "%",
    ast.FloorDiv: "//",
    ast.MatMult: "@",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.BitAnd: "&",
    ast.Invert: "~",
}
_OPERATOR_HINTS = {"|": "use 'or'", "&": "use 'and'", "~": "use 'not'"}
ORDERING: dict[type[ast.cmpop], tuple[str, Callable[[Any, Any], bool]]] = {
    ast.Lt: ("<", operator.lt),
    ast.LtE: ("<=", operator.le),
    ast.Gt: (">", operator.gt),
    ast.GtE: (">=", operator.ge),
}
_COMPARISONS = (ast.Eq, ast.NotEq, ast.In, ast.NotIn, *ORDERING)

_DESCRIPTIONS: dict[type[ast.AST], str] = {
    ast.Lambda: "lambda",
    ast.ListComp: "comprehension",
    ast.SetComp: "comprehension",
    ast.DictComp: "comprehension",
    ast.GeneratorExp: "generator expression",
    ast.JoinedStr: "f-string",
    ast.FormattedValue: "f-string",
    ast.NamedExpr: "assignment expression (:=)",
    ast.Starred: "starred expression (*x)",
    ast.IfExp: "conditional expression (x if c else y)",
    ast.Dict: "dict literal",
    ast.Set: "set literal",
    ast.Slice: "slice",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
}


def _arithmetic(symbol: str, left: Any, right: Any) -> Any:
    if left is None or right is None:
        return None
    if not (_is_number(left) and _is_number(right)):
        hint = "use number(...) to convert text" if isinstance(left, str) or isinstance(right, str) else None
        raise _Problem(f"'{symbol}' needs numbers, got {_kind(left)} and {_kind(right)}", hint)
    try:
        if symbol == "+":
            return left + right
        if symbol == "-":
            return left - right
        if symbol == "*":
            return left * right
        if right == 0:
            raise _Problem("division by zero")
        return left / right
    except OverflowError:
        raise _Problem(f"number too large in '{symbol}'") from None


def _contains(container: Any, item: Any) -> bool:
    if container is None:
        return False
    if isinstance(container, str):
        if item is None:
            return False
        if not isinstance(item, str):
            raise _Problem(f"'in' on a string needs a string on the left, got {_kind(item)}")
        return item in container
    if isinstance(container, (list, tuple)):
        return item in container
    if isinstance(container, Mapping):
        try:
            return item in container
        except TypeError:  # unhashable item: it cannot be a key
            return False
    raise _Problem(f"'in' needs a string, list or object on the right, got {_kind(container)}")


def _compare(op: ast.cmpop, left: Any, right: Any) -> bool:
    if isinstance(op, ast.Eq):
        return bool(left == right)
    if isinstance(op, ast.NotEq):
        return bool(left != right)
    if isinstance(op, ast.In):
        return _contains(right, left)
    if isinstance(op, ast.NotIn):
        return not _contains(right, left)
    symbol, function = ORDERING[type(op)]
    if left is None or right is None:
        return False
    if (_is_number(left) and _is_number(right)) or (isinstance(left, str) and isinstance(right, str)):
        return bool(function(left, right))
    hint = "use number(...) to convert text to a number" if str in (type(left), type(right)) else None
    raise _Problem(f"cannot compare {_kind(left)} and {_kind(right)} with '{symbol}'", hint)


# --------------------------------------------------------------------------- positions


class _Locator:
    """Turns AST positions (UTF-8 byte columns of the stripped text) into user columns."""

    def __init__(self, source: str, text: str) -> None:
        prefix = source[: len(source) - len(source.lstrip())]
        self._line_shift = prefix.count("\n")
        self._column_shift = len(prefix) - (prefix.rfind("\n") + 1)
        self._lines = text.split("\n")
        self._multiline = "\n" in source.strip()

    def position(self, lineno: int, char_column: int) -> tuple[int, int]:
        """1-based line and column in the original source, from a 0-based char column."""
        column = char_column + (self._column_shift if lineno == 1 else 0)
        return lineno + self._line_shift, column + 1

    def char_column(self, lineno: int, byte_column: int) -> int:
        line = self._lines[lineno - 1] if 0 < lineno <= len(self._lines) else ""
        return len(line.encode("utf-8")[:byte_column].decode("utf-8", errors="ignore"))

    def line_length(self, lineno: int) -> int:
        return len(self._lines[lineno - 1]) if 0 < lineno <= len(self._lines) else 0

    def describe(self, line: int, column: int) -> str:
        return f"line {line}, column {column}" if self._multiline else f"column {column}"

    def error(self, problem: _Problem, lineno: int, byte_column: int) -> ExpressionError:
        line, column = self.position(lineno, self.char_column(lineno, byte_column))
        message = f"{problem.message} at {self.describe(line, column)}"
        if problem.hint:
            message += f"; {problem.hint}"
        return ExpressionError(message, line=line, column=column)

    def node_error(self, problem: _Problem, node: ast.expr | ast.keyword) -> ExpressionError:
        return self.error(problem, node.lineno, node.col_offset)


# --------------------------------------------------------------------------- compiler


def _root_hint(roots: Collection[str]) -> str:
    forms = {"inputs": "inputs.<name>", "steps": "steps.<step_id>.<field>"}
    parts = [forms.get(root, f"{root}.<field>") for root in roots]
    if len(parts) == 1:
        return f"use {parts[0]}"
    return "use " + ", ".join(parts[:-1]) + " or " + parts[-1]


def _normalize_roots(roots: Collection[str]) -> tuple[str, ...]:
    if isinstance(roots, str):
        raise TypeError("roots must be a collection of names, not a single string")
    normalized = tuple(dict.fromkeys(roots))
    if not normalized:
        raise ValueError("at least one root name is required")
    for root in normalized:
        if (
            not isinstance(root, str)
            or not root.isidentifier()
            or keyword.iskeyword(root)
            or root.startswith("_")
            or root in _LITERAL_NAMES
            or root in _FUNCTIONS
            or root in ("True", "False", "None")
        ):
            raise ValueError(f"invalid root name {root!r}")
    return normalized


def _depth_problem(tree: ast.Expression) -> ast.expr | None:
    """The first expression node nested deeper than MAX_DEPTH, found without recursion."""
    stack: list[tuple[ast.AST, int]] = [(tree.body, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH and isinstance(node, ast.expr):
            return node
        for child in ast.iter_child_nodes(node):
            stack.append((child, depth + 1 if isinstance(child, ast.expr) else depth))
    return None


class _Checker:
    """Whitelist validation; also collects the (root, first key) references and the full paths."""

    def __init__(self, roots: tuple[str, ...]) -> None:
        self.roots = roots
        self.references: set[tuple[str, str]] = set()
        self.paths: set[tuple[str | int, ...]] = set()

    def check(self, node: ast.expr) -> None:
        if isinstance(node, ast.Constant):
            value = node.value
            if not (value is None or isinstance(value, (bool, int, float, str))):
                raise _Located(_Problem(f"{_kind(value)} literals are not allowed"), node)
        elif isinstance(node, ast.Name):
            self._check_name(node)
        elif isinstance(node, (ast.Attribute, ast.Subscript)):
            self._check_path(node)
        elif isinstance(node, (ast.List, ast.Tuple)):
            for element in node.elts:
                self.check(element)
        elif isinstance(node, ast.BoolOp):
            for value in node.values:
                self.check(value)
        elif isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, (ast.Not, ast.USub, ast.UAdd)):
                raise _Located(self._operator_problem(node.op), node)
            self.check(node.operand)
        elif isinstance(node, ast.BinOp):
            if type(node.op) not in ARITHMETIC:
                raise _Located(self._operator_problem(node.op), node)
            self.check(node.left)
            self.check(node.right)
        elif isinstance(node, ast.Compare):
            for op in node.ops:
                if isinstance(op, (ast.Is, ast.IsNot)):
                    problem = _Problem("'is' is not allowed", "use == or != (e.g. x == null)")
                    raise _Located(problem, node)
                if not isinstance(op, _COMPARISONS):
                    raise _Located(_Problem(f"comparison {type(op).__name__} is not allowed"), node)
            self.check(node.left)
            for comparator in node.comparators:
                self.check(comparator)
        elif isinstance(node, ast.Call):
            self._check_call(node)
        else:
            description = _DESCRIPTIONS.get(type(node), type(node).__name__)
            raise _Located(_Problem(f"{description} is not allowed"), node)

    @staticmethod
    def _operator_problem(op: ast.AST) -> _Problem:
        symbol = _OTHER_OPERATORS.get(type(op), type(op).__name__)
        return _Problem(
            f"operator '{symbol}' is not allowed",
            _OPERATOR_HINTS.get(symbol, "allowed: + - * / and, or, not, comparisons and in"),
        )

    def _check_name(self, node: ast.Name) -> None:
        name = node.id
        if name in self.roots or name in _LITERAL_NAMES:
            return
        if name in _FUNCTIONS:
            raise _Located(_Problem(f"function '{name}' must be called, e.g. {name}(...)"), node)
        raise _Located(_Problem(f"unknown name '{name}'", _root_hint(self.roots)), node)

    def _check_path(self, outer: ast.Attribute | ast.Subscript) -> None:
        chain: list[ast.Attribute | ast.Subscript] = []
        node: ast.AST = outer
        while isinstance(node, (ast.Attribute, ast.Subscript)):
            chain.append(node)
            node = node.value
        for part in reversed(chain):  # left to right, so the first problem is reported
            if isinstance(part, ast.Attribute):
                if part.attr.startswith("_"):
                    problem = _Problem(f"attribute '{part.attr}' is not allowed", _PRIVATE)
                    raise _Located(problem, part, attribute=part.attr)
            else:
                _subscript_key(part)  # validates; raises _Located
        if isinstance(node, ast.Name) and node.id in self.roots:
            keys = [p.attr if isinstance(p, ast.Attribute) else _subscript_key(p) for p in reversed(chain)]
            if isinstance(keys[0], str):
                self.references.add((node.id, keys[0]))
            self.paths.add((node.id, *keys))
            return
        if isinstance(node, ast.Name) and node.id not in _LITERAL_NAMES:
            self._check_name(node)  # unknown name or a bare function name
        roots = " or ".join(self.roots)
        raise _Located(_Problem(f"'.' and '[...]' are only allowed on paths that start with {roots}"), outer)

    def _check_call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Attribute):
            name = func.attr
            hint = f"use {name}(x)" if name in _FUNCTIONS else _ALLOWED_FUNCTIONS
            raise _Located(_Problem(f"method calls like x.{name}() are not allowed", hint), node)
        if not isinstance(func, ast.Name):
            raise _Located(_Problem("only the allowed functions can be called", _ALLOWED_FUNCTIONS), node)
        name = func.id
        if name not in _FUNCTIONS:
            raise _Located(_Problem(f"function '{name}' is not allowed", _ALLOWED_FUNCTIONS), func)
        if node.keywords:
            raise _Located(_Problem(f"keyword arguments are not allowed in {name}()"), node.keywords[0])
        for argument in node.args:
            self.check(argument)
        arity = _FUNCTIONS[name][0]
        if len(node.args) != arity:
            plural = "argument" if arity == 1 else "arguments"
            raise _Located(_Problem(f"{name}() takes {arity} {plural}, got {len(node.args)}"), node)
        if name in ("any_of", "all_of") and isinstance(node.args[1], ast.Constant):
            problem = _Problem(f"{name}() needs a list of words", f'e.g. {name}(text, ["risk", "decline"])')
            raise _Located(problem, node.args[1])


class _Located(Exception):
    """Internal: a compile-time problem and the node (or attribute) it points at."""

    def __init__(self, problem: _Problem, node: ast.expr | ast.keyword, attribute: str | None = None) -> None:
        super().__init__(problem.message)
        self.problem = problem
        self.node = node
        self.attribute = attribute

    def to_error(self, locator: _Locator) -> ExpressionError:
        node = self.node
        if self.attribute is not None and node.end_lineno is not None and node.end_col_offset is not None:
            # Point at the attribute name itself, which ends the node.
            start = node.end_col_offset - len(self.attribute.encode("utf-8"))
            return locator.error(self.problem, node.end_lineno, max(start, 0))
        return locator.node_error(self.problem, node)


def _subscript_key(node: ast.Subscript) -> str | int:
    index = node.slice
    negative = False
    if isinstance(index, ast.UnaryOp) and isinstance(index.op, ast.USub):
        if isinstance(index.operand, ast.Constant):
            negative, index = True, index.operand
    if isinstance(index, ast.Constant):
        value = index.value
        if isinstance(value, str) and not negative:
            if value.startswith("_"):
                raise _Located(_Problem(f"key '{value}' is not allowed", _PRIVATE), index)
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return -value if negative else value
    if isinstance(index, ast.Slice):
        raise _Located(_Problem("slices are not allowed"), index)
    problem = _Problem(
        "an index must be a string or integer literal",
        'e.g. steps["step-id"].output or inputs.items[0]',
    )
    raise _Located(problem, index)


# --------------------------------------------------------------------------- interpreter


class _Program:
    """A validated tree plus what evaluation needs to report positions."""

    def __init__(self, tree: ast.Expression, roots: tuple[str, ...], locator: _Locator) -> None:
        self.tree = tree
        self.roots = frozenset(roots)
        self.locator = locator

    def run(self, context: Mapping[str, Any]) -> Any:
        return self._eval(self.tree.body, context)

    def _eval(self, node: ast.expr, context: Mapping[str, Any]) -> Any:
        try:
            return self._dispatch(node, context)
        except _Problem as problem:
            raise self.locator.node_error(problem, node) from None

    def _dispatch(self, node: ast.expr, context: Mapping[str, Any]) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in self.roots:
                return context.get(node.id)
            return _LITERAL_NAMES[node.id]
        if isinstance(node, ast.Attribute):
            return _lookup(self._eval(node.value, context), node.attr)
        if isinstance(node, ast.Subscript):
            return _lookup(self._eval(node.value, context), _subscript_key(node))
        if isinstance(node, (ast.List, ast.Tuple)):
            return [self._eval(element, context) for element in node.elts]
        if isinstance(node, ast.BoolOp):
            want = isinstance(node.op, ast.Or)  # `or` stops at the first truthy value
            value: Any = None
            for operand in node.values:
                value = self._eval(operand, context)
                if bool(value) is want:
                    return value
            return value
        if isinstance(node, ast.UnaryOp):
            operand = self._eval(node.operand, context)
            if isinstance(node.op, ast.Not):
                return not operand
            if operand is None:
                return None
            if not _is_number(operand):
                symbol = "-" if isinstance(node.op, ast.USub) else "+"
                raise _Problem(f"unary '{symbol}' needs a number, got {_kind(operand)}")
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp):
            left = self._eval(node.left, context)
            right = self._eval(node.right, context)
            return _arithmetic(ARITHMETIC[type(node.op)], left, right)
        if isinstance(node, ast.Compare):
            left = self._eval(node.left, context)
            for op, comparator in zip(node.ops, node.comparators, strict=True):
                right = self._eval(comparator, context)
                if not _compare(op, left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name)
            arguments = [self._eval(argument, context) for argument in node.args]
            return _FUNCTIONS[node.func.id][1](*arguments)
        # Unreachable for validated trees; kept as a guard, never as a fallback.
        raise _Problem(f"{type(node).__name__} is not allowed")


# --------------------------------------------------------------------------- public API


def _syntax_error(error: SyntaxError, locator: _Locator, text: str) -> ExpressionError:
    message = error.msg or "invalid syntax"
    if error.lineno is None:
        return ExpressionError(f"syntax error: {message}")
    lineno = error.lineno
    # SyntaxError.offset is a 1-based character column; 0/None means "at the end".
    offset = error.offset if error.offset and error.offset > 0 else locator.line_length(lineno) + 1
    line, column = locator.position(lineno, offset - 1)
    hint = ""
    lines = text.split("\n")
    if 0 < lineno <= len(lines):
        current = lines[lineno - 1]
        at, after = current[offset - 1 : offset], current[offset : offset + 1]
        before = current[offset - 2 : offset - 1] if offset >= 2 else ""
        if at == "=" and after != "=" and before not in ("=", "!", "<", ">"):
            hint = "; use '==' to compare"
    return ExpressionError(
        f"syntax error at {locator.describe(line, column)}: {message}{hint}", line=line, column=column
    )


@dataclass(frozen=True)
class Expression:
    """A compiled, validated ``when:`` expression.

    Build it with :func:`compile_expression` (or ``Expression(source, roots)``);
    construction raises :class:`ExpressionError` for anything outside the grammar.
    """

    source: str
    roots: tuple[str, ...] = DEFAULT_ROOTS
    _program: _Program = field(init=False, repr=False, compare=False, hash=False)
    _references: frozenset[tuple[str, str]] = field(init=False, repr=False, compare=False, hash=False)
    _paths: frozenset[tuple[str | int, ...]] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.source, str):
            raise ExpressionError(f"an expression must be a string, got {type(self.source).__name__}")
        roots = _normalize_roots(self.roots)
        object.__setattr__(self, "roots", roots)
        source = self.source
        if len(source) > MAX_LENGTH:
            raise ExpressionError(f"expression is too long ({len(source)} characters, at most {MAX_LENGTH})")
        text = source.strip()
        if not text:
            raise ExpressionError("expression is empty")
        locator = _Locator(source, text)
        try:
            tree = ast.parse(text, mode="eval")
        except SyntaxError as error:
            raise _syntax_error(error, locator, text) from None
        except (ValueError, RecursionError, MemoryError) as error:
            raise ExpressionError(f"syntax error: {error}") from None
        deep = _depth_problem(tree)
        if deep is not None:
            problem = _Problem(f"expression is nested too deeply (more than {MAX_DEPTH} levels)")
            raise locator.node_error(problem, deep)
        checker = _Checker(roots)
        try:
            checker.check(tree.body)
        except _Located as located:
            raise located.to_error(locator) from None
        object.__setattr__(self, "_program", _Program(tree, roots, locator))
        object.__setattr__(self, "_references", frozenset(checker.references))
        object.__setattr__(self, "_paths", frozenset(checker.paths))

    def evaluate(self, context: Mapping[str, Any]) -> Any:
        """The raw value of the expression; ``context`` maps each root to its data."""
        if not isinstance(context, Mapping):
            raise TypeError(f"context must be a mapping, got {type(context).__name__}")
        try:
            return self._program.run(context)
        except ExpressionError:
            raise
        except (TypeError, ValueError, ArithmeticError, RecursionError) as error:
            raise ExpressionError(f"cannot evaluate {self.source!r}: {error}") from None

    def test(self, context: Mapping[str, Any]) -> bool:
        """Whether the expression holds (Python truthiness of :meth:`evaluate`)."""
        return bool(self.evaluate(context))

    @property
    def tree(self) -> ast.Expression:
        """The validated syntax tree (positions are in ``source.strip()``), for static checks."""
        return self._program.tree

    def references(self) -> set[tuple[str, str]]:
        """``(root, first key)`` pairs the expression reads, e.g. ``("steps", "review")``.

        The first key is the name after the root (``steps.review``) or a string index
        (``steps["market-analysis"]``); a bare root or an integer index adds nothing.
        """
        return set(self._references)

    def paths(self) -> set[tuple[str | int, ...]]:
        """Every path the expression reads, root first: ``steps.review.score`` gives
        ``("steps", "review", "score")`` (string and integer indexes included)."""
        return set(self._paths)


def compile_expression(source: str, roots: Collection[str] = DEFAULT_ROOTS) -> Expression:
    """Parse and validate ``source``; raise :class:`ExpressionError` if it is not allowed."""
    return Expression(source, _normalize_roots(roots))
