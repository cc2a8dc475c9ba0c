"""Words on sharpness over training (`sharpness_every`): did the run sharpen progressively and reach the edge of
stability 2 / lr (Cohen et al. 2021), and where did the batch sharpness sit (Andreyev & Beneventano 2024)?
Every claim from a measured number (:mod:`batchlab.analysis.sharpness`)."""

from __future__ import annotations

import math

from batchlab.analysis.sharpness import EOS_TOLERANCE, EdgeOfStability


def sharpness_paragraph(rows: list[EdgeOfStability], *, n_train: int) -> str:
    """One sentence per (batch size, rate), seeds pooled by their first run; empty when nothing was measured."""
    if not rows:
        return ""
    seen: set[tuple[int, float]] = set()
    parts = []
    for r in rows:
        if (r.batch_size, r.lr) in seen:
            continue
        seen.add((r.batch_size, r.lr))
        name = "full batch" if r.batch_size >= n_train else f"batch size {r.batch_size:,}"
        verdict = (f"reached the edge of stability (within {EOS_TOLERANCE:.0%} of 2 / lr)" if r.reached else
                   "stayed below the edge of stability" if r.late_ratio < 1 - EOS_TOLERANCE else
                   "went past 2 / lr")
        text = (f"{name}, lr {r.lr:g}: lambda_max x lr / 2 went from {r.first_ratio:.3f} to {r.late_ratio:.3f} "
                f"(median of the last quarter of {r.epochs} measurements; peak {r.peak_ratio:.3f}), so it {verdict}"
                + ("; progressive sharpening from below half the threshold" if r.sharpened else ""))
        if r.batch_size < n_train and math.isfinite(r.late_batch_ratio):
            text += f"; batch sharpness x lr / 2 late in training {r.late_batch_ratio:.3f}"
        parts.append(text)
    return ("Sharpness during training against the stability threshold 2 / lr (Cohen et al. 2021: full-batch "
            "gradient descent raises the top Hessian eigenvalue until it hovers at 2 / lr; for SGD Andreyev & "
            "Beneventano 2024 find that the batch sharpness, the mean over minibatches B of g_B' H_B g_B / |g_B|^2, "
            "settles there instead): "
            + "; ".join(parts) + ".")
