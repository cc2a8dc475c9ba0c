"""One colour per batch size, the same in every figure of a study (the PNGs and the report's plotly figures)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import to_hex

COLORMAP, COLOR_RANGE = "plasma", (0.0, 0.82)
"""Batch sizes take evenly spaced colours of this perceptually ordered map (its light yellow end left out: it
vanishes on white), by rank: distinct for a dozen batch sizes, and ordered like them (small: dark, large: light)."""


def batch_size_colors(batch_sizes: Iterable[int]) -> dict[int, str]:
    """The colour (hex) of each batch size of a study, the same in every figure: evenly spaced over COLOR_RANGE of
    COLORMAP by rank (smallest first). One batch size gets the map's first colour."""
    sizes = sorted(set(batch_sizes))
    cmap = colormaps[COLORMAP]
    lo, hi = COLOR_RANGE
    positions = [lo] if len(sizes) == 1 else list(np.linspace(lo, hi, len(sizes)))
    return {b: to_hex(cmap(p)) for b, p in zip(sizes, positions, strict=True)}
