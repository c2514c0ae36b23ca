"""The calculator's arithmetic: a whitelist of operators and functions over bounded numbers.

Every operation's result size is checked before it is computed, so that one expression is
provably short: no integer above MAX_DIGITS digits ever exists, and the largest operation is a
product of two such numbers (microseconds). A big-integer power runs as one C call holding the
GIL: no timeout, thread or task cancel can interrupt it once started, so it must never start.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any


class ArithError(ValueError):
    """An expression the calculator refuses; the message is for the model."""


MAX_EXPONENT = 10_000
MAX_DIGITS = 400
MAX_BITS = math.ceil(MAX_DIGITS * math.log2(10))

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "sqrt": math.sqrt,
    "exp": math.exp,
    "log": math.log,
    "log10": math.log10,
    "log2": math.log2,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "asin": math.asin,
    "acos": math.acos,
    "atan": math.atan,
    "floor": math.floor,
    "ceil": math.ceil,
}
_CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau}


def _number(value: Any) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ArithError("only numbers are allowed")
    if isinstance(value, int) and value.bit_length() > MAX_BITS:
        raise ArithError(f"a number in the expression is too large (over {MAX_DIGITS} digits)")
    return value


def _too_large(bits: float) -> None:
    if bits > MAX_BITS:
        digits = int(bits / math.log2(10)) + 1
        raise ArithError(f"the result would be too large (about {digits} digits)")


def _check_binary(op: ast.operator, left: float | int, right: float | int) -> None:
    """Refuse an integer operation whose result would pass MAX_DIGITS, before it runs."""
    if isinstance(op, ast.Pow):
        if abs(right) > MAX_EXPONENT:
            raise ArithError(f"exponent larger than {MAX_EXPONENT}")
        # A float power overflows at once (OverflowError); an int one grows without end.
        if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
            _too_large(right * math.log2(abs(left)))
    elif isinstance(op, ast.Mult) and isinstance(left, int) and isinstance(right, int):
        _too_large(left.bit_length() + right.bit_length() - 1)


def _check_call(name: str, args: list[float | int]) -> None:
    # round(n, -k) computes 10**k inside: an unbounded k is an unbounded power.
    if name == "round" and len(args) == 2 and abs(args[1]) > MAX_DIGITS:
        raise ArithError(f"round() takes at most {MAX_DIGITS} digits")


def _eval(node: ast.AST) -> float | int:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant):
        return _number(node.value)
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _eval(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        _check_binary(node.op, left, right)
        return _number(_BINARY[type(node.op)](left, right))
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in FUNCTIONS
        and not node.keywords
    ):
        args = [_eval(a) for a in node.args]
        _check_call(node.func.id, args)
        return _number(FUNCTIONS[node.func.id](*args))
    raise ArithError(f"not allowed in an expression: {ast.unparse(node)[:60]!r}")


def evaluate(expression: str) -> float | int:
    """The value of an arithmetic expression (`^` is a power); ArithError when refused."""
    try:
        return _eval(ast.parse(expression.replace("^", "**"), mode="eval"))
    except ArithError:
        raise
    except SyntaxError:
        raise ArithError(f"not an arithmetic expression: {expression!r}") from None
    except (RecursionError, MemoryError):
        raise ArithError("the expression is nested too deeply") from None
    except (ArithmeticError, ValueError, TypeError) as exc:
        raise ArithError(f"{type(exc).__name__}: {exc}") from None
