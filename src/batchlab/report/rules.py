"""Words on whether a learning-rate scaling rule held (:mod:`batchlab.analysis.rule_check`), from measured
numbers only."""

from __future__ import annotations

import math

from batchlab.analysis.rule_check import HOLDS_Z, NOISE_TOLERANCE, PhaseGap, RulePair


def _phase(p: PhaseGap) -> str:
    verdict = "" if p.holds is None else " (holds)" if p.holds else " (breaks)"
    z = f", {p.z:+.1f} seed spreads" if math.isfinite(p.z) else ""
    return f"{p.phase} (epochs {p.epochs[0]}-{p.epochs[1]}) {math.exp(p.log_gap) - 1:+.1%}{z}{verdict}"


def rule_paragraph(pairs: list[RulePair], *, rule: str) -> str:
    """Per pair (B, kB): the loss gap at equal examples by phase and the noise ratio against 1/sqrt(B)."""
    if not pairs or rule == "none":
        return ""
    parts = []
    for p in pairs:
        text = f"{p.batch_size:,} vs {p.larger:,}: {_phase(p.early)}; {_phase(p.late)}"
        if math.isfinite(p.noise_measured):
            text += (f"; step-noise ratio {p.noise_measured:.2f}x against {p.noise_predicted:.2f}x for 1/sqrt(B)"
                     + (" (follows)" if p.noise_follows else " (does not follow)"))
        parts.append(text)
    return (f"Does the {rule} rule hold here? Training loss of the larger batch against the smaller at equal "
            f"examples seen (seeds averaged; it holds within {HOLDS_Z:g} seed spreads), and the step-to-step "
            f"noise against 1/sqrt(B) (within {NOISE_TOLERANCE:.0%}): " + "; ".join(parts) + ".")
