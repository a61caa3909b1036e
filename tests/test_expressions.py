"""Tests for mne_core.expressions: the safe energy-expression language."""
import jax

jax.config.update("jax_enable_x64", True)

import math  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mne_core.expressions import (  # noqa: E402
    MAX_DEPTH,
    MAX_LENGTH,
    Expression,
    ExpressionError,
    parse_expression,
)

X = np.array([0.7, -1.3, 2.1])

# (text, reference as a function of x = (x0, x1, x2))
VALUE_CASES = [
    ("-x0**2", lambda x: -(x[0] ** 2)),
    ("-x1**2", lambda x: -(x[1] ** 2)),
    ("(-x1)**2", lambda x: x[1] ** 2),
    ("2**3**2 + 0*x0", lambda x: 512.0),
    ("1/2/2 + 0*x0", lambda x: 0.25),
    ("x0 - x1 - 1", lambda x: (x[0] - x[1]) - 1.0),
    ("x0 - (x1 - 1)", lambda x: x[0] - (x[1] - 1.0)),
    ("2**-1*x2", lambda x: 0.5 * x[2]),
    ("-2**2*x0", lambda x: -4.0 * x[0]),
    ("x2**2**-1", lambda x: x[2] ** 0.5),
    ("logaddexp(x0, x1)", lambda x: np.logaddexp(x[0], x[1])),
    ("logaddexp(-x0**2/2, -(x1 - 3)**2)", lambda x: np.logaddexp(-x[0] ** 2 / 2, -(x[1] - 3) ** 2)),
    ("pi*x0**2", lambda x: math.pi * x[0] ** 2),
    ("exp(-x0)*sqrt(abs(x1)) + log(1 + x0**2) - sin(x0)*cos(x1) + tanh(x2)",
     lambda x: np.exp(-x[0]) * np.sqrt(abs(x[1])) + np.log(1 + x[0] ** 2)
     - np.sin(x[0]) * np.cos(x[1]) + np.tanh(x[2])),
    (".5*x0 + 1e-3*x1 + 2.5E+1 + 5. + 1.25e2*x2",
     lambda x: 0.5 * x[0] + 1e-3 * x[1] + 25.0 + 5.0 + 125.0 * x[2]),
    ("+x0", lambda x: x[0]),
    ("- -x0", lambda x: x[0]),
    ("x0*-x1", lambda x: x[0] * -x[1]),
    (" x0\t*\n2 ", lambda x: 2 * x[0]),
    ("2*(x0**2 - 1)**2 + 0.5*x1**2", lambda x: 2 * (x[0] ** 2 - 1) ** 2 + 0.5 * x[1] ** 2),
    ("x0/x1/x2", lambda x: (x[0] / x[1]) / x[2]),
    ("x0**x2", lambda x: x[0] ** x[2]),
]


@pytest.mark.parametrize("text,ref", VALUE_CASES, ids=[c[0] for c in VALUE_CASES])
def test_values_match_numpy(text, ref):
    expr = parse_expression(text, 3)
    want = ref(X)
    np.testing.assert_allclose(float(expr.energy(jnp.asarray(X))), want, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(float(expr.energy_numpy(X)), want, rtol=1e-13, atol=1e-14)


def test_attributes():
    expr = parse_expression("x0**2 + exp(x2)", 4)
    assert isinstance(expr, Expression)
    assert expr.text == "x0**2 + exp(x2)"
    assert expr.variables == {0, 2}
    assert expr.dim == 4


def test_jax_transformations():
    expr = parse_expression("0.5*x0**2 + x0*x1 + 2*x1**2 + sin(x1)", 2)
    x = jnp.array([0.3, -0.8])
    g = jax.grad(expr.energy)(x)
    np.testing.assert_allclose(g, [x[0] + x[1], x[0] + 4 * x[1] + np.cos(x[1])], rtol=1e-14)
    h = jax.hessian(expr.energy)(x)
    np.testing.assert_allclose(h, [[1.0, 1.0], [1.0, 4.0 - np.sin(x[1])]], rtol=1e-14)
    xs = jnp.array([[0.0, 0.0], [1.0, 2.0], [-1.0, 0.5]])
    v = jax.jit(jax.vmap(expr.energy))(xs)
    want = [0.5 * a * a + a * b + 2 * b * b + np.sin(b) for a, b in np.asarray(xs)]
    np.testing.assert_allclose(v, want, rtol=1e-14)
    assert jax.jit(expr.energy)(x).shape == ()


def test_wrong_point_shape():
    expr = parse_expression("x0 + x1", 2)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        expr.energy(jnp.zeros(3))


ERROR_CASES = [
    # text, dim, token, position, message fragment
    ("__import__('os')", 2, "__import__", 0, "unexpected token '__import__' at position 0"),
    ("x0 + __import__", 2, "__import__", 5, "unexpected token '__import__' at position 5"),
    ("foo(x0)", 2, "foo", 0, "unknown function 'foo' at position 0 (allowed: exp, log"),
    ("x0 + x5", 2, "x5", 5, "variable x5 out of range for dim 2 at position 5"),
    ("x0.real", 2, ".", 2, "at position 2"),
    ("x0[0]", 2, "[", 2, "unexpected token '['"),
    ("x0]", 2, "]", 2, "unexpected token ']'"),
    ("{x0}", 2, "{", 0, "unexpected token '{'"),
    ("'x0'", 2, "'", 0, "unexpected token"),
    ('"x0"', 2, '"', 0, "unexpected token"),
    ("x0; x1", 2, ";", 2, "unexpected token ';'"),
    ("x0 = 1", 2, "=", 3, "unexpected token '='"),
    ("x0 @ x1", 2, "@", 3, "unexpected token '@'"),
    ("lambda x: x", 2, "lambda", 0, "unknown name 'lambda'"),
    ("import os", 2, "import", 0, "unknown name 'import'"),
    ("x0 x1", 2, "x1", 3, "unexpected token 'x1' at position 3"),
    ("x0 + 1)", 2, ")", 6, "unbalanced parenthesis"),
    ("(x0 + 1", 2, "(", 0, "unbalanced parenthesis: '(' at position 0 is never closed"),
    ("exp(x0", 2, "(", 3, "never closed"),
    ("", 2, "", 0, "empty expression"),
    ("   ", 2, "", 0, "empty expression"),
    ("x0 +", 2, "", 4, "unexpected end of expression at position 4"),
    ("exp(x0, x1)", 2, "exp", 0, "takes 1 argument, got 2"),
    ("logaddexp(x0)", 2, "logaddexp", 0, "takes 2 arguments, got 1"),
    ("exp x0", 2, "exp", 0, "must be followed by '('"),
    ("exp()", 2, ")", 4, "unbalanced parenthesis: unexpected ')'"),
    ("2x0", 2, "2x0", 0, "malformed number '2x0'"),
    ("1.2.3*x0", 2, "1.2.3", 0, "malformed number"),
    ("e*x0", 2, "e", 0, "unknown name 'e'"),
    ("x01", 2, "x01", 0, "unknown name 'x01'"),
    ("X0", 2, "X0", 0, "unknown name 'X0'"),
    ("x0 ** * 2", 2, "*", 6, "unexpected token '*'"),
    ("x0, x1", 2, ",", 2, "unexpected token ','"),
    ("1e999 * x0", 2, "1e999", 0, "too large"),
    ("3 + pi", 2, "", 0, "uses no variables"),
    ("x0 + ²", 2, "²", 5, "unexpected token '²'"),
    ("x0 + ０", 2, "０", 5, "unexpected token"),
]


@pytest.mark.parametrize("text,dim,token,position,fragment", ERROR_CASES,
                         ids=[repr(c[0]) for c in ERROR_CASES])
def test_errors(text, dim, token, position, fragment):
    with pytest.raises(ExpressionError) as info:
        parse_expression(text, dim)
    err = info.value
    assert fragment in str(err)
    assert err.token == token
    assert err.position == position


def test_limits_give_expression_errors_not_recursion_errors():
    ok = "(" * MAX_DEPTH + "x0" + ")" * MAX_DEPTH
    assert float(parse_expression(ok, 1).energy_numpy([2.0])) == 2.0
    for text in ["(" * (MAX_DEPTH + 1) + "x0" + ")" * (MAX_DEPTH + 1),
                 "-" * 1500 + "x0",
                 "2**" * 500 + "x0",
                 "exp(" * 300 + "x0" + ")" * 300,
                 "(" * 1990 + "x0"]:
        with pytest.raises(ExpressionError, match="nested too deeply"):
            parse_expression(text, 1)
    with pytest.raises(ExpressionError, match="too long") as info:
        parse_expression("x0+" * 700 + "x0", 1)
    assert info.value.position == MAX_LENGTH
    # long flat chains are fine (no recursion in parsing or evaluation)
    text = "+".join(["x0"] * 600)
    expr = parse_expression(text, 1)
    assert len(text) <= MAX_LENGTH
    assert float(expr.energy(jnp.array([1.5]))) == pytest.approx(900.0)


def test_bad_dim_and_type():
    with pytest.raises(ValueError, match="dim"):
        parse_expression("x0", 0)
    with pytest.raises(ExpressionError, match="must be a string"):
        parse_expression(None, 2)


def test_ieee_results_not_exceptions():
    expr = parse_expression("1/x0 + log(x1) + 0**-1*x0", 2)
    assert np.isnan(float(expr.energy(jnp.array([0.0, -1.0]))))
    assert float(parse_expression("1/x0", 1).energy(jnp.array([0.0]))) == np.inf


# --------------------------------------------------------------------------- properties

_PRINTABLE = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=120)
_TOKENS = ["x0", "x1", "x2", "x9", "pi", "e", "1", "2.5", ".5", "1e-3", "+", "-", "*", "/",
           "**", "(", ")", ",", " ", "exp", "log", "logaddexp", "sqrt", "abs", "foo", "_", ".",
           "[", "]", "'", "lambda", "import"]
_TOKEN_SOUP = st.lists(st.sampled_from(_TOKENS), max_size=40).map("".join)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(_PRINTABLE, _TOKEN_SOUP, st.text(max_size=60)), dim=st.integers(1, 4))
def test_random_text_only_raises_expression_error(text, dim):
    try:
        expr = parse_expression(text, dim)
    except ExpressionError as err:
        assert 0 <= err.position <= len(text)
        assert isinstance(err.token, str)
        assert err.token == "" or err.token in text
        return
    # accepted: it must evaluate (numpy backend) without raising
    expr.energy_numpy(np.linspace(-1.0, 1.0, dim))


_BAD = ["__", "__import__", "__class__", "import", "lambda", ".real", ".imag", ".__dict__",
        "[", "]", "'", '"', "[0]", "'os'"]


@settings(max_examples=200, deadline=None)
@given(prefix=st.text(alphabet="x0123456789+-*/() .pi,", max_size=15),
       bad=st.sampled_from(_BAD),
       suffix=st.text(alphabet="x0123456789+-*/() .pi,", max_size=15))
def test_dangerous_fragments_always_rejected(prefix, bad, suffix):
    with pytest.raises(ExpressionError):
        parse_expression(prefix + bad + suffix, 10)


# Well-formed expression trees, rendered with minimal (plus optional) parentheses, and a
# reference evaluator working on the same tree.
_NUM_TEXTS = [(".5", 0.5), ("5.", 5.0), ("1e-3", 1e-3), ("2.5E+1", 25.0), ("0", 0.0),
              ("3", 3.0), ("1.5e2", 150.0)]

_leaf = st.one_of(
    st.floats(0.0, 50.0, allow_nan=False, allow_infinity=False).map(lambda v: ("num", repr(v), v)),
    st.sampled_from(_NUM_TEXTS).map(lambda p: ("num", p[0], p[1])),
    st.integers(0, 3).map(lambda i: ("var", i)),
    st.just(("num", "pi", math.pi)),
)


def _extend(children):
    return st.one_of(
        st.tuples(st.sampled_from(["neg", "pos", "paren"]), children),
        st.tuples(st.just("bin"), st.sampled_from(["+", "-", "*", "/", "**"]), children, children),
        st.tuples(st.just("call"), st.sampled_from(["exp", "log", "sqrt", "sin", "cos", "tanh", "abs"]),
                  children),
        st.tuples(st.just("call2"), st.just("logaddexp"), children, children),
    )


_trees = st.recursive(_leaf, _extend, max_leaves=14)

_PREC = {"+": 1, "-": 1, "*": 2, "/": 2, "**": 4}


def _prec(node):
    kind = node[0]
    if kind == "bin":
        return _PREC[node[1]]
    if kind in ("neg", "pos"):
        return 3
    return 5


def _render(node):
    kind = node[0]

    def child(c, need):
        s = _render(c)
        return f"({s})" if _prec(c) < need else s

    if kind == "num":
        return node[1]
    if kind == "var":
        return f"x{node[1]}"
    if kind == "neg":
        return "-" + child(node[1], 3)
    if kind == "pos":
        return "+" + child(node[1], 3)
    if kind == "paren":
        return "(" + _render(node[1]) + ")"
    if kind == "call":
        return f"{node[1]}({_render(node[2])})"
    if kind == "call2":
        return f"{node[1]}({_render(node[2])}, {_render(node[3])})"
    op, a, b = node[1], node[2], node[3]
    if op in "+-":
        return f"{child(a, 1)} {op} {child(b, 2)}"
    if op in "*/":
        return f"{child(a, 2)}{op}{child(b, 3)}"
    return f"{child(a, 5)}**{child(b, 3)}"


_NP = {"exp": np.exp, "log": np.log, "sqrt": np.sqrt, "sin": np.sin, "cos": np.cos,
       "tanh": np.tanh, "abs": np.abs, "logaddexp": np.logaddexp}


def _reference(node, x, perturb=None, seen=None):
    """NumPy evaluation of a tree; ``perturb()`` (optional) multiplies each node's value;
    ``seen`` (optional list) collects every node's value."""
    kind = node[0]
    r = lambda c: _reference(c, x, perturb, seen)  # noqa: E731
    if kind == "num":
        v = np.float64(node[2])
    elif kind == "var":
        v = np.float64(x[node[1]])
    elif kind == "neg":
        v = -r(node[1])
    elif kind in ("pos", "paren"):
        v = r(node[1])
    elif kind == "call":
        v = _NP[node[1]](r(node[2]))
    elif kind == "call2":
        v = _NP[node[1]](r(node[2]), r(node[3]))
    else:
        a, b = r(node[2]), r(node[3])
        v = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide,
             "**": np.power}[node[1]](a, b)
    if seen is not None:
        seen.append(v)
    return v * perturb() if perturb is not None else v


def _uses_var(node):
    return node[0] == "var" or any(isinstance(c, tuple) and _uses_var(c) for c in node[1:])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=_trees, x=st.lists(st.floats(-3.0, 3.0), min_size=4, max_size=4))
def test_generated_expressions_match_reference(tree, x):
    if not _uses_var(tree):
        tree = ("bin", "+", tree, ("var", 0))
    text = _render(tree)
    expr = parse_expression(text, 4)
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(all="ignore"):
        values = []
        ref = _reference(tree, x, seen=values)
        # same tree structure and the same NumPy operations: bitwise equal
        np.testing.assert_array_equal(expr.energy_numpy(x), ref, err_msg=text)
        # jax.numpy vs NumPy: equal up to rounding, with the tolerance set by the conditioning
        # of this evaluation (spread of the reference under 1e-13 relative per-node noise)
        rng = np.random.default_rng(0)
        perturbed = [_reference(tree, x, lambda: 1.0 + 1e-13 * rng.uniform(-1, 1)) for _ in range(3)]
    got = float(expr.energy(jnp.asarray(x)))
    tiny = np.finfo(np.float64).tiny
    if any(0 < abs(v) < tiny for v in values):
        return  # XLA on CPU flushes subnormals to zero; NumPy keeps them
    if np.isfinite(ref) and all(np.isfinite(perturbed)):
        spread = max(abs(p - ref) for p in perturbed)
        assert abs(got - ref) <= 10 * spread + 1e-12 * abs(ref) + 1e-300, text
    elif all((np.isnan(p) and np.isnan(ref)) or p == ref for p in perturbed):
        assert (np.isnan(got) and np.isnan(ref)) or got == ref, text
