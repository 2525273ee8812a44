"""Typed helpers over sympy: decide an identity, and say why when it fails.

``vanishes(label, expr)`` is the one decision rule every symbolic proof uses:

- commutative expressions: ``sympy.simplify(expr) == 0`` proves the identity. Otherwise the residual is
  evaluated at a random rational point (respecting the symbols' assumptions) at 50 digits: a non-zero value is a
  counterexample; a value that vanishes there means sympy could not decide, and the step fails anyway ("not a
  proof"). Nothing passes on numbers alone.
- noncommutative expressions (block-matrix algebra): ``sympy.expand(expr) == 0`` in the free algebra proves it
  (an identity of noncommutative polynomials holds for matrices of every size and every block partition). A
  non-zero residual is evaluated on random rational 3 x 3 matrices: a non-zero value is a counterexample.

sympy ships no type information, so this module is where its objects become ``Any`` and its answers ``bool``.
"""

from __future__ import annotations

import random
from typing import Any

import mpmath
import sympy as sp

from proofs_checks.proofs.record import Step

__all__ = ["Expr", "equal", "matches_spec", "nc_symbols", "symbols", "vanishes"]

Expr = Any
"""A sympy expression (sympy is untyped)."""

_DIGITS = 50
_MATRIX_SIZE = 3
_POINTS = 5
_SEED = 20250526


def symbols(names: str, **assumptions: bool) -> tuple[Expr, ...]:
    """Commutative sympy symbols with assumptions (``positive=True``, ``integer=True``, ...), always a tuple."""
    created = sp.symbols(names, seq=True, **assumptions)
    return tuple(created)


def nc_symbols(names: str) -> tuple[Expr, ...]:
    """Noncommutative symbols: matrices (or blocks) of any compatible shapes, always a tuple."""
    created = sp.symbols(names, seq=True, commutative=False)
    return tuple(created)


def _short(expr: Expr, limit: int = 160) -> str:
    text = str(expr)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _random_value(symbol: Expr, rng: random.Random) -> Expr:
    """A rational value compatible with the symbol's assumptions (integers in 3..9, reals in (1/2, 5/2))."""
    if symbol.is_integer:
        return sp.Integer(rng.randint(3, 9))
    value = sp.Rational(rng.randint(50, 250), 100)
    return value if symbol.is_positive or symbol.is_nonnegative else value * rng.choice((1, -1))


def _evaluate_commutative(expr: Expr, rng: random.Random) -> tuple[Expr, dict[Expr, Expr]]:
    point = {s: _random_value(s, rng) for s in sorted(expr.free_symbols, key=str)}
    return sp.N(expr.subs(point), _DIGITS), point


def _matrix_value(expr: Expr, values: dict[Expr, Expr]) -> Expr:
    """Evaluate a noncommutative expression with every symbol replaced by a 3 x 3 rational matrix or a scalar."""
    identity = sp.eye(_MATRIX_SIZE)
    if expr in values:
        value = values[expr]
        return value if isinstance(value, sp.MatrixBase) else value * identity
    if expr.is_Add:
        total = sp.zeros(_MATRIX_SIZE)
        for term in expr.args:
            total += _matrix_value(term, values)
        return total
    if expr.is_Mul:
        product = identity
        for factor in expr.args:
            product = product * _matrix_value(factor, values)
        return product
    if expr.is_Pow and expr.exp.is_Integer:
        base = _matrix_value(expr.base, values)
        return base ** int(expr.exp)
    if expr.is_commutative and not expr.free_symbols - set(values):
        scalars = {s: v for s, v in values.items() if not isinstance(v, sp.MatrixBase)}
        return sp.nsimplify(expr.subs(scalars)) * identity
    raise ValueError(f"cannot evaluate {_short(expr)} on matrices")


def _evaluate_noncommutative(expr: Expr, rng: random.Random) -> tuple[Expr, dict[Expr, Expr]]:
    values: dict[Expr, Expr] = {}
    for s in sorted(expr.free_symbols, key=str):
        if s.is_commutative:
            values[s] = _random_value(s, rng)
        else:
            values[s] = sp.Matrix(_MATRIX_SIZE, _MATRIX_SIZE, lambda i, j: sp.Integer(rng.randint(-3, 3)))
    return _matrix_value(expr, values), values


def _every_branch_vanishes(expr: Expr) -> bool:
    """A Piecewise residual (sympy's closed forms of sums) is 0 if each branch is 0 where its condition holds.

    A branch under ``Eq(symbol, value)`` is checked with the value substituted; any other branch must vanish
    identically.
    """
    folded = sp.piecewise_fold(expr)
    if not isinstance(folded, sp.Piecewise):
        return False
    for branch, condition in folded.args:
        on_condition = branch
        if isinstance(condition, sp.Eq) and condition.lhs.is_Symbol:
            on_condition = branch.subs(condition.lhs, condition.rhs)
        if sp.simplify(on_condition) != 0:
            return False
    return True


def _commutative_step(label: str, expr: Expr) -> Step:
    reduced = sp.expand(expr)
    if reduced != 0:
        reduced = sp.simplify(reduced)
    if reduced == 0:
        return Step(label, True, "residual simplifies to 0")
    if reduced.has(sp.Piecewise) and _every_branch_vanishes(reduced):
        return Step(label, True, "residual vanishes on every branch of its Piecewise form")
    rng = random.Random(_SEED)
    for _ in range(_POINTS):
        value, point = _evaluate_commutative(reduced, rng)
        where = ", ".join(f"{k}={v}" for k, v in point.items())
        if value.is_number and value.is_finite and value != 0 and abs(value) > sp.Float(10) ** (10 - _DIGITS):
            at = f" at {where}" if where else ""
            return Step(label, False, f"residual {_short(reduced)} = {sp.N(value, 6)}{at}")
    return Step(label, False, f"sympy could not reduce {_short(reduced)} to 0; it vanishes numerically at "
                              f"{_POINTS} random points (not a proof)")


def _collect_monomials(expr: Expr) -> Expr:
    """Sum the commutative coefficients of each noncommutative monomial and simplify them (rational functions of
    the commutative symbols, such as beta / (1 + beta k^T k)); 0 iff every coefficient simplifies to 0."""
    coefficients: dict[tuple[Expr, ...], Expr] = {}
    for term in sp.Add.make_args(sp.expand(expr)):
        commutative, noncommutative = term.args_cnc()
        key = tuple(noncommutative)
        coefficients[key] = coefficients.get(key, sp.Integer(0)) + sp.Mul(*commutative)
    total = sp.Integer(0)
    for key, coefficient in coefficients.items():
        total += sp.simplify(coefficient) * sp.Mul(*key)
    return total


def _noncommutative_step(label: str, expr: Expr) -> Step:
    reduced = _collect_monomials(expr)
    if reduced == 0:
        return Step(label, True, "residual expands to 0 (noncommutative)")
    rng = random.Random(_SEED)
    for _ in range(_POINTS):
        try:
            value, _values = _evaluate_noncommutative(reduced, rng)
        except (ValueError, ZeroDivisionError):
            continue
        if any(entry != 0 for entry in value):
            return Step(label, False, f"residual {_short(reduced)} is non-zero on random rational 3x3 matrices "
                                      f"(max entry {max(abs(e) for e in value)})")
    return Step(label, False, f"residual {_short(reduced)} did not expand to 0 (not decided)")


def vanishes(label: str, expr: Expr) -> Step:
    """Decide ``expr == 0`` symbolically (see the module docstring); the step's evidence says how.

    ``expr`` may be a sympy Matrix (a block matrix): then every entry must vanish.
    """
    if isinstance(expr, sp.MatrixBase):
        for entry in expr:
            step = vanishes(label, entry)
            if not step.holds:
                return step
        return Step(label, True, f"every entry of the {expr.rows}x{expr.cols} block residual vanishes")
    expr = sp.sympify(expr)
    if expr.is_commutative:
        return _commutative_step(label, expr)
    return _noncommutative_step(label, expr)


def equal(label: str, lhs: Expr, rhs: Expr) -> Step:
    """``vanishes(label, lhs - rhs)`` (sympy Matrices allowed on both sides)."""
    if isinstance(lhs, sp.MatrixBase) or isinstance(rhs, sp.MatrixBase):
        return vanishes(label, lhs - rhs)
    lhs, rhs = sp.sympify(lhs), sp.sympify(rhs)
    if lhs.is_infinite or rhs.is_infinite:
        holds = bool(lhs == rhs)
        return Step(label, holds, f"{'both sides are' if holds else 'not equal:'} {_short(lhs)} and {_short(rhs)}")
    return vanishes(label, lhs - rhs)


SPEC_DIGITS = 45
"""Working precision of ``matches_spec``: the spec runs in mpmath at this many digits."""


def matches_spec(label: str, spec_value: Any, expr: Expr) -> Step:
    """The spec's number (computed at ``SPEC_DIGITS`` digits) equals the proved closed form ``expr`` (no free
    symbols left) to 30 digits: a transcription check tying the proof to the code, not part of the proof."""
    exact = sp.N(expr, SPEC_DIGITS)
    if exact.free_symbols:
        raise ValueError(f"matches_spec needs a number, got {_short(expr)}")
    gap = abs(sp.Float(mpmath.nstr(spec_value, SPEC_DIGITS + 5), SPEC_DIGITS) - exact)
    holds = bool(gap <= sp.Float(10) ** -30 * max(1, abs(exact)))
    return Step(label, holds, f"spec {sp.N(exact, 8)}, |spec - closed form| = {sp.N(gap, 3)}")
