"""Safe user energy expressions: a tiny arithmetic language, parsed without ``eval``.

A user types an energy such as ``2*(x0**2 - 1)**2 + 0.5*x1**2``; this module turns it
into a JAX-traceable function ``U(x)`` of a point ``x`` of shape ``(d,)``.  No Python
``eval``/``exec``/``compile`` (nor ``ast``) ever sees the user text: an own tokenizer and a
recursive-descent parser build a small syntax tree, which is then evaluated node by node
with ``jax.numpy`` operations.

Grammar (``**`` is right-associative and binds tighter than unary minus, as in Python)::

    expr    := term (('+' | '-') term)*
    term    := unary (('*' | '/') unary)*
    unary   := ('+' | '-') unary | power
    power   := primary ('**' unary)?
    primary := NUMBER | VARIABLE | 'pi' | FUNCTION '(' expr (',' expr)* ')' | '(' expr ')'

    NUMBER   : 12, 1.5, .5, 5., 1e-3, 2.5E+4         (ASCII digits only)
    VARIABLE : x0, x1, ..., x{d-1}
    FUNCTION : exp log sqrt sin cos tanh abs  (one argument), logaddexp (two arguments)

So ``-x0**2 == -(x0**2)``, ``2**3**2 == 512``, ``1/2/2 == 0.25`` and ``2**-1 == 0.5``.
Everything else (other names, ``_``, attribute access ``x0.real``, brackets, quotes,
``;``, ``=``, ``@``, keywords such as ``lambda``/``import``, trailing tokens, unbalanced
parentheses, wrong argument counts) is rejected with an :class:`ExpressionError` that
names the offending token and its character offset.  Limits: at most
:data:`MAX_LENGTH` characters and :data:`MAX_DEPTH` nesting levels (parentheses, function
calls, unary signs and powers), so parsing never hits Python's recursion limit.  An
expression must use at least one variable (a constant energy is not normalizable).
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, NamedTuple, Union

import jax.numpy as jnp
import numpy as np

__all__ = [
    "ExpressionError",
    "Expression",
    "parse_expression",
    "FUNCTIONS",
    "MAX_LENGTH",
    "MAX_DEPTH",
]

MAX_LENGTH = 2000
"""Longest accepted expression text, in characters."""

MAX_DEPTH = 64
"""Deepest accepted nesting (parentheses, calls, unary signs, powers)."""

FUNCTIONS: dict[str, int] = {
    "exp": 1,
    "log": 1,
    "sqrt": 1,
    "sin": 1,
    "cos": 1,
    "tanh": 1,
    "abs": 1,
    "logaddexp": 2,
}
"""Allowed function names and their number of arguments."""

_ALLOWED_FUNCS = ", ".join(FUNCTIONS)


class ExpressionError(ValueError):
    """An energy expression is malformed or uses something outside the grammar.

    Attributes:
        position: character offset (0-based) in the expression text where the problem is.
        token: the offending token text ('' at the end of input or for whole-text errors).
    """

    def __init__(self, message: str, position: int = 0, token: str = ""):
        super().__init__(message)
        self.position = int(position)
        self.token = str(token)


# --------------------------------------------------------------------------- tokens

class _Token(NamedTuple):
    kind: str  # "num" | "var" | "pi" | "func" | "op" | "end"
    text: str
    pos: int
    value: Any = None  # float for "num", int for "var"


_NUMBER_RE = re.compile(r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WORDCHAR_RE = re.compile(r"[A-Za-z0-9_.]*")
_VAR_RE = re.compile(r"x(0|[1-9][0-9]*)")
_SINGLE_OPS = "+-*/(),"
_SPACE = " \t\r\n"


def _next_nonspace(text: str, i: int) -> str:
    while i < len(text) and text[i] in _SPACE:
        i += 1
    return text[i] if i < len(text) else ""


def _tokenize(text: str, dim: int) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in _SPACE:
            i += 1
            continue
        if ("0" <= c <= "9") or (c == "." and i + 1 < n and "0" <= text[i + 1] <= "9"):
            m = _NUMBER_RE.match(text, i)
            end = m.end()
            tail = _WORDCHAR_RE.match(text, end).end()
            if tail > end:  # 2x0, 1.2.3, 1e, 3_000
                raise ExpressionError(
                    f"malformed number {text[i:tail]!r} at position {i}", i, text[i:tail])
            value = float(m.group())
            if not math.isfinite(value):
                raise ExpressionError(
                    f"number {m.group()!r} at position {i} is too large", i, m.group())
            tokens.append(_Token("num", m.group(), i, value))
            i = end
            continue
        if c.isascii() and (c.isalpha() or c == "_"):
            word = _IDENT_RE.match(text, i).group()
            tokens.append(_classify_identifier(word, i, dim, _next_nonspace(text, i + len(word))))
            i += len(word)
            continue
        if text.startswith("**", i):
            tokens.append(_Token("op", "**", i))
            i += 2
            continue
        if c in _SINGLE_OPS:
            tokens.append(_Token("op", c, i))
            i += 1
            continue
        if c == ".":
            raise ExpressionError(
                f"unexpected token '.' at position {i} (attribute access is not allowed)", i, ".")
        raise ExpressionError(f"unexpected token {c!r} at position {i}", i, c)
    tokens.append(_Token("end", "", n))
    return tokens


def _classify_identifier(word: str, pos: int, dim: int, following: str) -> _Token:
    if "_" in word:
        raise ExpressionError(f"unexpected token {word!r} at position {pos}", pos, word)
    m = _VAR_RE.fullmatch(word)
    if m:
        index = int(m.group(1))
        if index >= dim:
            raise ExpressionError(
                f"variable {word} out of range for dim {dim} at position {pos} "
                f"(variables are x0…x{dim - 1})", pos, word)
        return _Token("var", word, pos, index)
    if word == "pi":
        return _Token("pi", word, pos, math.pi)
    if word in FUNCTIONS:
        return _Token("func", word, pos)
    if following == "(":
        raise ExpressionError(
            f"unknown function {word!r} at position {pos} (allowed: {_ALLOWED_FUNCS})", pos, word)
    hint = " (use exp(1) for Euler's number)" if word == "e" else ""
    raise ExpressionError(
        f"unknown name {word!r} at position {pos}{hint} (allowed: variables x0…x{dim - 1}, "
        f"constant pi, functions {_ALLOWED_FUNCS})", pos, word)


# --------------------------------------------------------------------------- syntax tree

class Num(NamedTuple):
    value: float


class Var(NamedTuple):
    index: int


class Neg(NamedTuple):
    operand: "Node"


class Chain(NamedTuple):
    """Left-associative chain ``first op1 t1 op2 t2 ...`` of ``+ -`` or of ``* /``."""
    first: "Node"
    rest: tuple  # tuple[(op, Node), ...]


class Pow(NamedTuple):
    base: "Node"
    exponent: "Node"


class Call(NamedTuple):
    name: str
    args: tuple


Node = Union[Num, Var, Neg, Chain, Pow, Call]


class _Parser:
    def __init__(self, tokens: list[_Token]):
        self.tokens = tokens
        self.i = 0

    @property
    def tok(self) -> _Token:
        return self.tokens[self.i]

    def _is_op(self, *ops: str) -> bool:
        return self.tok.kind == "op" and self.tok.text in ops

    def _check_depth(self, depth: int) -> None:
        if depth > MAX_DEPTH:
            t = self.tok
            raise ExpressionError(
                f"expression is nested too deeply (more than {MAX_DEPTH} levels) "
                f"at position {t.pos}", t.pos, t.text)

    def _unexpected(self) -> ExpressionError:
        t = self.tok
        if t.kind == "end":
            return ExpressionError(f"unexpected end of expression at position {t.pos}", t.pos, "")
        if t.kind == "op" and t.text == ")":
            return ExpressionError(
                f"unbalanced parenthesis: unexpected ')' at position {t.pos}", t.pos, ")")
        return ExpressionError(f"unexpected token {t.text!r} at position {t.pos}", t.pos, t.text)

    def parse(self) -> Node:
        node = self.expr(0)
        if self.tok.kind != "end":
            raise self._unexpected()
        return node

    def expr(self, depth: int) -> Node:
        return self._chain(depth, ("+", "-"), self.term)

    def term(self, depth: int) -> Node:
        return self._chain(depth, ("*", "/"), self.unary)

    def _chain(self, depth, ops, sub) -> Node:
        first = sub(depth)
        rest = []
        while self._is_op(*ops):
            op = self.tok.text
            self.i += 1
            rest.append((op, sub(depth)))
        return Chain(first, tuple(rest)) if rest else first

    def unary(self, depth: int) -> Node:
        if self._is_op("+", "-"):
            self._check_depth(depth + 1)
            op = self.tok.text
            self.i += 1
            operand = self.unary(depth + 1)
            return Neg(operand) if op == "-" else operand
        return self.power(depth)

    def power(self, depth: int) -> Node:
        base = self.primary(depth)
        if self._is_op("**"):
            self._check_depth(depth + 1)
            self.i += 1
            return Pow(base, self.unary(depth + 1))
        return base

    def primary(self, depth: int) -> Node:
        t = self.tok
        if t.kind in ("num", "pi"):
            self.i += 1
            return Num(t.value)
        if t.kind == "var":
            self.i += 1
            return Var(t.value)
        if t.kind == "func":
            self.i += 1
            if not self._is_op("("):
                raise ExpressionError(
                    f"function {t.text!r} at position {t.pos} must be followed by '('", t.pos, t.text)
            open_tok = self.tok
            self._check_depth(depth + 1)
            self.i += 1
            args = [self.expr(depth + 1)]
            while self._is_op(","):
                self.i += 1
                args.append(self.expr(depth + 1))
            self._close(open_tok)
            want = FUNCTIONS[t.text]
            if len(args) != want:
                raise ExpressionError(
                    f"function {t.text!r} at position {t.pos} takes {want} argument"
                    f"{'s' if want != 1 else ''}, got {len(args)}", t.pos, t.text)
            return Call(t.text, tuple(args))
        if t.kind == "op" and t.text == "(":
            self._check_depth(depth + 1)
            self.i += 1
            node = self.expr(depth + 1)
            self._close(t)
            return node
        raise self._unexpected()

    def _close(self, open_tok: _Token) -> None:
        if self._is_op(")"):
            self.i += 1
            return
        if self.tok.kind == "end":
            raise ExpressionError(
                f"unbalanced parenthesis: '(' at position {open_tok.pos} is never closed",
                open_tok.pos, "(")
        t = self.tok
        raise ExpressionError(
            f"expected ')' or an operator but found {t.text!r} at position {t.pos}", t.pos, t.text)


def _collect_variables(node: Node, out: set) -> None:
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, Var):
            out.add(n.index)
        elif isinstance(n, Neg):
            stack.append(n.operand)
        elif isinstance(n, Chain):
            stack.append(n.first)
            stack.extend(t for _, t in n.rest)
        elif isinstance(n, Pow):
            stack.extend((n.base, n.exponent))
        elif isinstance(n, Call):
            stack.extend(n.args)


# --------------------------------------------------------------------------- evaluation

_JNP_FUNCS = {
    "exp": jnp.exp, "log": jnp.log, "sqrt": jnp.sqrt, "sin": jnp.sin, "cos": jnp.cos,
    "tanh": jnp.tanh, "abs": jnp.abs, "logaddexp": jnp.logaddexp,
}
_NP_FUNCS = {
    "exp": np.exp, "log": np.log, "sqrt": np.sqrt, "sin": np.sin, "cos": np.cos,
    "tanh": np.tanh, "abs": np.abs, "logaddexp": np.logaddexp,
}


def _evaluate(node: Node, x, xp, funcs, dtype):
    if isinstance(node, Num):
        return xp.asarray(node.value, dtype=dtype)
    if isinstance(node, Var):
        return x[..., node.index]
    if isinstance(node, Neg):
        return -_evaluate(node.operand, x, xp, funcs, dtype)
    if isinstance(node, Chain):
        acc = _evaluate(node.first, x, xp, funcs, dtype)
        for op, t in node.rest:
            v = _evaluate(t, x, xp, funcs, dtype)
            if op == "+":
                acc = acc + v
            elif op == "-":
                acc = acc - v
            elif op == "*":
                acc = acc * v
            else:
                acc = acc / v
        return acc
    if isinstance(node, Pow):
        return xp.power(_evaluate(node.base, x, xp, funcs, dtype),
                        _evaluate(node.exponent, x, xp, funcs, dtype))
    if isinstance(node, Call):
        return funcs[node.name](*(_evaluate(a, x, xp, funcs, dtype) for a in node.args))
    raise TypeError(f"unknown node {node!r}")  # pragma: no cover


@dataclasses.dataclass(frozen=True, eq=False)
class Expression:
    """A parsed energy expression.

    Attributes:
        text: the source text.
        dim: the dimension d of the points it is evaluated at.
        variables: frozenset of variable indices i used (``x_i``).
        tree: the syntax tree (``Num``, ``Var``, ``Neg``, ``Chain``, ``Pow``, ``Call`` nodes).
    """

    text: str
    dim: int
    variables: frozenset
    tree: Any

    def energy(self, x):
        """U(x) for ``x`` of shape ``(d,)`` (or ``(..., d)``), with ``jax.numpy`` ops.

        Returns a scalar (or an array of the leading shape).  Traceable under
        ``jit``/``grad``/``vmap``/``hessian``.  Division by zero, ``log`` of negatives
        and the like give ``inf``/``nan`` as in IEEE arithmetic, never an exception.
        """
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(jnp.result_type(float))
        if x.ndim < 1 or x.shape[-1] != self.dim:
            raise ValueError(f"expression energy expects x of shape ({self.dim},), got {x.shape}")
        return _evaluate(self.tree, x, jnp, _JNP_FUNCS, x.dtype)

    __call__ = energy

    def energy_numpy(self, x):
        """Same as :meth:`energy` but with NumPy in float64 (no JAX; IEEE warnings silenced)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim < 1 or x.shape[-1] != self.dim:
            raise ValueError(f"expression energy expects x of shape ({self.dim},), got {x.shape}")
        with np.errstate(all="ignore"):
            return _evaluate(self.tree, x, np, _NP_FUNCS, np.float64)

    def __repr__(self) -> str:
        return f"Expression({self.text!r}, dim={self.dim})"


def parse_expression(text: str, dim: int) -> Expression:
    """Parse ``text`` into an :class:`Expression` in the variables ``x0 … x{dim-1}``.

    Raises :class:`ExpressionError` (with ``position`` and ``token``) for any text outside
    the grammar in the module docstring, and ``ValueError`` for a bad ``dim``.
    """
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    dim = int(dim)
    if not isinstance(text, str):
        raise ExpressionError(f"expression must be a string, got {type(text).__name__}", 0, "")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(
            f"expression is too long ({len(text)} characters, at most {MAX_LENGTH})", MAX_LENGTH, "")
    if not text.strip(_SPACE):
        raise ExpressionError("empty expression", 0, "")
    tokens = _tokenize(text, dim)
    tree = _Parser(tokens).parse()
    variables: set = set()
    _collect_variables(tree, variables)
    if not variables:
        raise ExpressionError(
            f"expression uses no variables x0…x{dim - 1}: a constant energy is not normalizable",
            0, "")
    return Expression(text=text, dim=dim, variables=frozenset(variables), tree=tree)
