"""The GraphFlow ``when:`` expression language: what it evaluates and what it refuses."""

from __future__ import annotations

import ast
import builtins
import copy
import sys
from pathlib import Path
from typing import Any

import pytest

from convergio.graphflow import expressions
from convergio.graphflow.expressions import (
    MAX_DEPTH,
    MAX_LENGTH,
    Expression,
    ExpressionError,
    compile_expression,
)

CONTEXT: dict[str, Any] = {
    "inputs": {
        "budget": 25000,
        "regions": ["EU", "US", "APAC"],
        "company": "Acme",
        "threshold": "12.5",
        "flags": {"fast": True},
    },
    "steps": {
        "market_analysis": {
            "output": "Strong growth expected in the EU; some Risk in APAC.",
            "score": 7.5,
            "status": "completed",
        },
        "market-analysis": {"output": "dashed id output", "score": 3, "status": "failed"},
        "review": {"output": "Approved with notes", "score": 8, "status": "completed"},
        "empty": {"output": "", "score": None, "status": "skipped"},
    },
}


def evaluate(source: str, context: dict[str, Any] | None = None) -> Any:
    return compile_expression(source).evaluate(CONTEXT if context is None else context)


def compile_error(source: str, **kwargs: Any) -> str:
    with pytest.raises(ExpressionError) as info:
        compile_expression(source, **kwargs)
    return str(info.value)


# --------------------------------------------------------------------------- evaluation


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("inputs.budget", 25000),
        ("inputs.budget > 10000", True),
        ("inputs.budget >= 25000 and inputs.budget < 25001", True),
        ("steps.market_analysis.output", CONTEXT["steps"]["market_analysis"]["output"]),
        ("steps.review.score >= 7.5", True),
        ('steps.review.status == "completed"', True),
        ('steps.review.status != "completed"', False),
        ('steps["market-analysis"].output', "dashed id output"),
        ('steps["market-analysis"].score < 5', True),
        ("inputs.regions[0]", "EU"),
        ("inputs.regions[-1]", "APAC"),
        ('inputs["company"]', "Acme"),
        ("inputs.flags.fast", True),
        ('"growth" in steps.market_analysis.output', True),
        ('"Growth" in steps.market_analysis.output', False),  # case-sensitive
        ('"growth" in lower(steps.market_analysis.output)', True),
        ('"decline" not in steps.market_analysis.output', True),
        ('"US" in inputs.regions', True),
        ('"LATAM" in inputs.regions', False),
        ('inputs.company in ["Acme", "Globex"]', True),
        ('inputs.company in ("Acme", "Globex")', True),
        ('"fast" in inputs.flags', True),
        ("not steps.empty.output", True),
        ("not (inputs.budget > 100 and steps.review.score > 9)", True),
        ("steps.review.score > 9 or inputs.budget > 100", True),
        ("-inputs.budget", -25000),
        ("+inputs.budget", 25000),
        ("inputs.budget * 2 - 1000", 49000),
        ("inputs.budget / 4", 6250.0),
        ("(1 + 2) * 3", 9),
        ("1 + 2 * 3", 7),
        ("10 - 4 - 3", 3),
        ("inputs.budget + 0.5 > 25000", True),
        ("true", True),
        ("false", False),
        ("null", None),
        ("True and not False", True),
        ("None == null", True),
        ("[1, 2, inputs.budget]", [1, 2, 25000]),
        ("(1, 2) == [1, 2]", True),
        ('"abc" < "abd"', True),
        ("'single quotes'", "single quotes"),
    ],
)
def test_examples_evaluate(source: str, expected: Any) -> None:
    assert evaluate(source) == expected


def test_and_or_return_operands_and_short_circuit() -> None:
    assert evaluate('steps.missing.output or "fallback"') == "fallback"
    assert evaluate("inputs.company and inputs.budget") == 25000
    assert evaluate("steps.empty.output and 1 / 0") == ""  # right side never evaluated
    assert evaluate("inputs.budget or 1 / 0") == 25000


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("1 < 2 < 3", True),
        ("1 < 3 < 2", False),
        ("1 < steps.review.score <= 8", True),
        ("1 < steps.review.score < 8", False),
        ("0 <= steps.market_analysis.score <= 10 != 11", True),
        ("3 > 2 > 1 == 1", True),
        ('"a" < "b" < "c" in "xcx"', True),
    ],
)
def test_chained_comparisons(source: str, expected: bool) -> None:
    assert evaluate(source) is expected


def test_chained_comparison_stops_at_first_false() -> None:
    # Python semantics: once `1 > 2` is False, the rest is never evaluated.
    assert evaluate("1 > 2 > inputs.budget / 0") is False


def test_missing_keys_are_none_and_ordering_with_none_is_false() -> None:
    assert evaluate("steps.unknown_step.output") is None
    assert evaluate("steps.review.missing_field") is None
    assert evaluate("inputs.regions[10]") is None
    assert evaluate("inputs.regions[-10]") is None
    assert evaluate("inputs.budget.nested") is None  # path through a number
    assert evaluate('inputs.regions["key"]') is None  # string key on a list
    assert evaluate("steps.empty.score") is None
    for op in ("<", "<=", ">", ">="):
        assert evaluate(f"steps.unknown.score {op} 5") is False
        assert evaluate(f"5 {op} steps.unknown.score") is False
        assert evaluate(f"steps.empty.score {op} null") is False
    assert evaluate("steps.unknown.score == null") is True
    assert evaluate("steps.unknown.score != 5") is True
    assert evaluate('"growth" in steps.unknown.output') is False
    assert evaluate('"growth" not in steps.unknown.output') is True
    assert evaluate('null in "text"') is False
    assert evaluate("steps.unknown.score * 2 > 10") is False
    assert evaluate("-steps.unknown.score") is None
    assert evaluate("len(steps.unknown.output)") == 0


def test_missing_roots_in_context_are_none() -> None:
    expression = compile_expression("steps.review.score > 5 or inputs.budget == null")
    assert expression.evaluate({}) is True
    assert expression.test({"inputs": {"budget": 3}}) is False


def test_test_returns_bool() -> None:
    assert compile_expression("inputs.company").test(CONTEXT) is True
    assert compile_expression("steps.empty.output").test(CONTEXT) is False
    assert compile_expression("steps.nothing").test(CONTEXT) is False
    assert compile_expression("inputs.regions").test(CONTEXT) is True


# --------------------------------------------------------------------------- functions


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("len(inputs.regions)", 3),
        ('len("abcd")', 4),
        ("len(inputs.flags)", 1),
        ("len(steps.empty.output) == 0", True),
        ('lower("MiXeD")', "mixed"),
        ('upper("MiXeD")', "MIXED"),
        ("lower(steps.unknown.output)", None),
        ("number(inputs.threshold)", 12.5),
        ('number(" 42 ")', 42.0),
        ("number(7)", 7.0),
        ('number("7.5/10")', None),
        ('number("abc")', None),
        ('number("nan")', None),
        ('number("inf")', None),
        ("number(true)", None),
        ("number(null)", None),
        ("number(inputs.regions)", None),
        ("number(inputs.threshold) > 12", True),
        ('any_of(steps.market_analysis.output, ["risk", "decline"])', True),  # case-insensitive
        ('any_of(steps.market_analysis.output, ["decline", "loss"])', False),
        ('all_of(steps.market_analysis.output, ["GROWTH", "risk"])', True),
        ('all_of(steps.market_analysis.output, ["growth", "loss"])', False),
        ("any_of(steps.market_analysis.output, [])", False),
        ("all_of(steps.market_analysis.output, [])", True),
        ('any_of(steps.unknown.output, ["x"])', False),
        ('all_of(steps.unknown.output, ["x"])', False),
        ("any_of(inputs.company, inputs.regions)", False),
    ],
)
def test_functions(source: str, expected: Any) -> None:
    assert evaluate(source) == expected


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("len(inputs.budget)", "len() needs a string, list or object, got number"),
        ("lower(inputs.budget)", "lower() needs a string, got number"),
        ("upper(inputs.regions)", "upper() needs a string, got list"),
        ('any_of(inputs.budget, ["x"])', "any_of() needs a string as its first argument"),
        ("any_of(inputs.company, inputs.company)", "needs a list of words"),
        ("all_of(inputs.company, [1])", "all_of() words must be strings"),
    ],
)
def test_function_type_errors(source: str, message: str) -> None:
    expression = compile_expression(source)
    with pytest.raises(ExpressionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        expression.test(CONTEXT)


# --------------------------------------------------------------------------- evaluation errors


def test_division_by_zero_is_an_expression_error_at_test_time() -> None:
    expression = compile_expression("inputs.budget / (steps.review.score - 8) > 1")
    with pytest.raises(ExpressionError, match="division by zero at column 1") as info:
        expression.test(CONTEXT)
    assert info.value.column == 1
    assert isinstance(info.value, ValueError)
    # With a non-zero divisor the same expression is fine.
    assert expression.test({"inputs": {"budget": 10}, "steps": {"review": {"score": 9}}}) is True


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("steps.review.output > 3", "cannot compare string and number with '>'"),
        ("inputs.threshold < 20", "use number"),
        ("inputs.regions < 3", "cannot compare list and number with '<'"),
        ('inputs.company + "x"', "'+' needs numbers, got string and string"),
        ("inputs.flags.fast + 1", "'+' needs numbers, got boolean and number"),
        ("-inputs.company", "unary '-' needs a number, got string"),
        ('3 in "abc"', "'in' on a string needs a string on the left"),
        ("1 in inputs.budget", "'in' needs a string, list or object on the right"),
    ],
)
def test_type_errors_at_evaluation(source: str, message: str) -> None:
    expression = compile_expression(source)
    with pytest.raises(ExpressionError) as info:
        expression.test(CONTEXT)
    assert message in str(info.value)
    assert "at column" in str(info.value)


def test_evaluation_error_points_at_the_failing_node() -> None:
    with pytest.raises(ExpressionError, match="division by zero at column 22"):
        compile_expression("steps.review.score > 1/0").evaluate(CONTEXT)


def test_context_must_be_a_mapping() -> None:
    with pytest.raises(TypeError):
        compile_expression("inputs.a").evaluate([("inputs", {})])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- rejected at compile time


@pytest.mark.parametrize(
    ("source", "fragments"),
    [
        ("foo == 1", ["unknown name 'foo' at column 1", "use inputs.<name> or steps.<step_id>.<field>"]),
        ("inputs.a and output", ["unknown name 'output' at column 14"]),
        ("foo.bar", ["unknown name 'foo'"]),
        ("__builtins__", ["unknown name '__builtins__'"]),
        (
            'eval("1+1")',
            ["function 'eval' is not allowed", "allowed: len, lower, upper, number, any_of, all_of"],
        ),
        ("__import__('os')", ["function '__import__' is not allowed"]),
        ("__import__('os').system('ls')", ["method calls like x.system() are not allowed"]),
        ("open('/etc/passwd')", ["function 'open' is not allowed"]),
        ("getattr(inputs, 'x')", ["function 'getattr' is not allowed"]),
        ("inputs.__class__", ["attribute '__class__' is not allowed at column 8", "private"]),
        ("inputs.a.__class__.__mro__", ["attribute '__class__' is not allowed"]),
        ("steps.review._secret", ["attribute '_secret' is not allowed"]),
        ('inputs["__class__"]', ["key '__class__' is not allowed"]),
        ("lambda: 1", ["lambda is not allowed"]),
        ("(lambda x: x)(1)", ["only the allowed functions can be called"]),
        ("[r for r in inputs.regions]", ["comprehension is not allowed"]),
        ("{r: 1 for r in inputs.regions}", ["comprehension is not allowed"]),
        ("any(r for r in inputs.regions)", ["function 'any' is not allowed"]),
        ("len(r for r in inputs.regions)", ["generator expression is not allowed"]),
        ("inputs.company.upper()", ["method calls like x.upper() are not allowed", "use upper(x)"]),
        ("inputs.company.startswith('A')", ["method calls like x.startswith() are not allowed"]),
        ('f"{inputs.company}"', ["f-string is not allowed"]),
        ("(x := 1)", ["assignment expression (:=) is not allowed"]),
        ("[*inputs.regions]", ["starred expression (*x) is not allowed"]),
        ("len(*inputs.regions)", ["starred expression"]),
        ("len(inputs.regions, key=1)", ["keyword arguments are not allowed"]),
        ("len(**inputs)", ["keyword arguments are not allowed"]),
        ("len(inputs.a, inputs.b)", ["len() takes 1 argument, got 2"]),
        ("any_of(inputs.a)", ["any_of() takes 2 arguments, got 1"]),
        ('any_of(inputs.a, "risk")', ["any_of() needs a list of words"]),
        ("len", ["function 'len' must be called"]),
        ("1 if inputs.a else 2", ["conditional expression"]),
        ("{'a': 1}", ["dict literal is not allowed"]),
        ("{1, 2}", ["set literal is not allowed"]),
        ("inputs.regions[0:2]", ["slices are not allowed"]),
        ("inputs.regions[inputs.i]", ["an index must be a string or integer literal"]),
        ("inputs.regions[True]", ["an index must be a string or integer literal"]),
        ("inputs.a ** 2", ["operator '**' is not allowed"]),
        ("inputs.a % 2", ["operator '%' is not allowed"]),
        ("inputs.a // 2", ["operator '//' is not allowed"]),
        ("inputs.a | inputs.b", ["operator '|' is not allowed", "use 'or'"]),
        ("~inputs.a", ["operator '~' is not allowed"]),
        ("inputs.a is None", ["'is' is not allowed", "=="]),
        ("b'bytes'", ["bytes literals are not allowed"]),
        ("1j", ["complex literals are not allowed"]),
        ("...", ["ellipsis literals are not allowed"]),
        ("'abc'.upper", ["only allowed on paths that start with inputs or steps"]),
        ("lower(inputs.a).b", ["only allowed on paths that start with inputs or steps"]),
        ("true.x", ["only allowed on paths that start with inputs or steps"]),
        ("inputs.a = 1", ["syntax error at column 10", "use '=='"]),
        ("inputs.budget >", ["syntax error at column 16"]),
        ("inputs.budget > > 1", ["syntax error at column"]),
        ("x; import os", ["syntax error"]),
        ("import os", ["syntax error"]),
        ("", ["expression is empty"]),
        ("   ", ["expression is empty"]),
        ("a\x00", ["syntax error"]),
    ],
)
def test_rejected_at_compile_time(source: str, fragments: list[str]) -> None:
    message = compile_error(source)
    for fragment in fragments:
        assert fragment in message, message


def test_columns_count_characters_and_leading_whitespace() -> None:
    assert "at column 14" in compile_error('"é" + inputs.__x')
    assert "at column 11" in compile_error("   inputs.__x")
    with pytest.raises(ExpressionError) as info:
        compile_expression("(inputs.a\n  + inputs._b)")
    assert "at line 2, column 12" in str(info.value)
    assert (info.value.line, info.value.column) == (2, 12)


def test_too_long() -> None:
    source = "inputs.a == " + '"' + "x" * MAX_LENGTH + '"'
    assert "too long" in compile_error(source)
    # Exactly at the limit is fine.
    at_limit = 'inputs.a == "' + "x" * (MAX_LENGTH - len('inputs.a == ""')) + '"'
    assert len(at_limit) == MAX_LENGTH
    assert compile_expression(at_limit).test({"inputs": {"a": "y"}}) is False


def test_too_deep() -> None:
    deep = "(" * (MAX_DEPTH + 5) + "inputs.a" + ")" * (MAX_DEPTH + 5)
    assert compile_expression(deep).evaluate({"inputs": {"a": 1}}) == 1  # parentheses add no nodes
    too_deep = "-" * (MAX_DEPTH + 1) + "1"
    assert "nested too deeply" in compile_error(too_deep)
    assert compile_expression("-" * (MAX_DEPTH - 1) + "1").evaluate({}) == -1
    sums = " + ".join(["1"] * (MAX_DEPTH + 2))
    assert "nested too deeply" in compile_error(sums)
    # Many operands of one `and` are flat, not deep.
    flat = " and ".join(["true"] * 100)
    assert compile_expression(flat).evaluate({}) is True


def test_pathologically_nested_source_is_an_expression_error() -> None:
    # The Python parser itself gives up on this; it must still surface as ExpressionError.
    assert compile_error("(" * 300 + "1" + ")" * 300)


def test_non_string_source() -> None:
    with pytest.raises(ExpressionError, match="must be a string"):
        compile_expression(5)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- roots


def test_custom_roots() -> None:
    expression = compile_expression("item.price > 3 and vars.limit", roots=("item", "vars"))
    assert expression.test({"item": {"price": 4}, "vars": {"limit": 1}}) is True
    assert expression.references() == {("item", "price"), ("vars", "limit")}
    message = compile_error("inputs.a", roots=("item",))
    assert "unknown name 'inputs'" in message
    assert "use item.<field>" in message


def test_a_single_root_string_is_refused() -> None:
    with pytest.raises(TypeError):
        compile_expression("inputs.a", roots="inputs")


@pytest.mark.parametrize("root", ["len", "true", "_private", "not an identifier", "class", "None"])
def test_invalid_root_names(root: str) -> None:
    with pytest.raises(ValueError):
        compile_expression("1", roots=(root,))


# --------------------------------------------------------------------------- references


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            'inputs.budget > 1000 and "growth" in steps.market_analysis.output',
            {("steps", "market_analysis"), ("inputs", "budget")},
        ),
        ('steps["market-analysis"].output', {("steps", "market-analysis")}),
        ("steps.review.score > 7 and steps.review.status", {("steps", "review")}),
        (
            'any_of(lower(steps.a.output), ["x"]) or len(inputs.regions[0]) > 2',
            {("steps", "a"), ("inputs", "regions")},
        ),
        ("inputs.regions[0]", {("inputs", "regions")}),
        ("1 + 2 == 3", set()),
        ("len(steps) > 0", set()),  # a bare root names no key
        ("inputs[0]", set()),  # an integer index is not a key
    ],
)
def test_references(source: str, expected: set[tuple[str, str]]) -> None:
    assert compile_expression(source).references() == expected


def test_references_returns_a_fresh_set() -> None:
    expression = compile_expression("steps.a.output")
    expression.references().add(("inputs", "x"))
    assert expression.references() == {("steps", "a")}


# --------------------------------------------------------------------------- safety and determinism


def test_deterministic_and_does_not_mutate_context() -> None:
    context = copy.deepcopy(CONTEXT)
    sources = [
        'any_of(steps.market_analysis.output, ["risk"]) and number(inputs.threshold) > 10',
        "inputs.budget / 3",
        "inputs.regions",
        '"US" in inputs.regions and steps.review.score >= 8',
    ]
    for source in sources:
        first = compile_expression(source)
        second = compile_expression(source)
        results = [first.evaluate(context), first.evaluate(context), second.evaluate(context)]
        assert len({repr(result) for result in results}) == 1
        assert first == second and hash(first) == hash(second)
    assert context == CONTEXT


def test_never_uses_eval_or_exec(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("eval/exec must not be used")

    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    expression = compile_expression('steps.review.score * 2 > 10 and "Approved" in steps.review.output')
    assert expression.test(CONTEXT) is True


def test_attribute_syntax_reads_dict_keys_never_python_attributes() -> None:
    class Sneaky:
        secret = "python attribute"

        def __getitem__(self, key: str) -> str:
            return "item"

    # Objects that are not mappings are opaque: no getattr, no __getitem__.
    assert compile_expression("inputs.obj.secret").evaluate({"inputs": {"obj": Sneaky()}}) is None
    assert compile_expression('inputs.obj["secret"]').evaluate({"inputs": {"obj": Sneaky()}}) is None
    assert compile_expression("inputs.keys").evaluate({"inputs": {"a": 1}}) is None


def test_module_imports_only_the_standard_library() -> None:
    tree = ast.parse(Path(expressions.__file__).read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0
            imported.add((node.module or "").split(".")[0])
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in {"eval", "exec", "compile", "__import__", "getattr", "open"}
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


def test_expression_value_semantics() -> None:
    expression = compile_expression("inputs.a > 1")
    assert expression == Expression("inputs.a > 1")
    assert expression != compile_expression("inputs.a > 1", roots=("inputs",))
    assert "_program" not in repr(expression)
    assert repr(expression).startswith("Expression(source='inputs.a > 1'")
    assert len({expression, Expression("inputs.a > 1")}) == 1
    with pytest.raises(AttributeError):
        expression.source = "true"  # type: ignore[misc]
    with pytest.raises(ExpressionError):
        Expression("foo")
