"""How the report names and formats what a study measured, in one place: the metric (accuracy or R²), its
values, and the loss."""

from __future__ import annotations

import math


def metric_label(task: str) -> str:
    """How tables and text name the metric stored in the `*_acc` fields: `acc`, or `R²` for regression."""
    return "R²" if task == "regression" else "acc"


def metric_text(value: float, task: str) -> str:
    """A metric value as shown: a percentage for accuracy, four decimals for R²."""
    return f"{value:.4f}" if task == "regression" else f"{value:.1%}"


def loss_name(task: str) -> str:
    """What the loss is, for axis labels."""
    if task == "next_token":
        return "cross-entropy per token, nats"
    return "squared error, standardized target" if task == "regression" else "cross-entropy loss"


def number(value: float, digits: int = 3) -> str:
    """A measured number as tables print it: `digits` significant digits, never more than about 7 characters.

    Ordinary magnitudes print in fixed point (``0.0871``, ``4.56``, ``52.0``, ``1,234``); very small or very large
    ones in a short scientific form (``2.1e-5``, ``1.35e6``) so that a blown-up loss of 1.2e24 can never print as
    a 25-digit number. Zero is ``0``; NaN and infinities print as ``nan``, ``inf``, ``-inf``.
    """
    x = float(value)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    magnitude = abs(x)
    if 1e-3 <= magnitude < 1e4:
        if magnitude >= 10 ** (digits - 1):  # 123.4 -> 123, 1234.5 -> 1,235 (integers, with a thousands comma)
            return f"{x:,.0f}"
        text = f"{x:#.{digits}g}"  # '#' keeps significant trailing zeros: 52.0, 2.20
        return text.rstrip(".") if "e" not in text else f"{x:.{digits}f}"
    mantissa, exponent = f"{x:.{max(digits - 1, 0)}e}".split("e")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def seconds(value: float) -> str:
    """A duration in seconds as tables print it (see :func:`number`): ``0.062``, ``4.56``, ``52.0``, ``1,234``."""
    return number(value, 3)


def count(value: int) -> str:
    """A count in full with thousands commas (``143,700``): update counts are never rounded."""
    return f"{int(value):,}"
