"""Figures are written, sized and not blank."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np

from batchlab.results import StudyResults


def test_figures_for_every_run_plus_overlay_cost_and_scaling(wine_study):
    results = StudyResults.load(wine_study)
    paths = results.write_figures()
    names = sorted(p.name for p in paths)
    assert names == sorted([f"lena_{s.run_id}.png" for s in results.summaries] + ["overlay.png", "cost.png", "scaling.png"])
    for p in paths:
        image = mpimg.imread(p)
        assert image.shape[1] > 1000 and image.shape[0] > 400
        assert np.std(image[..., :3]) > 0.05  # not a blank canvas
