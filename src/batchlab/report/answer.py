"""The answer to Lena's puzzle, in plain words, each statement from measured numbers by a rule stated here.

The rules (each a small function, each tested on constructed studies in tests/report/test_answer.py):

- **Noisy or smooth** (:func:`curve_kind`): a per-epoch curve is *noisy* when, after epoch 10, it rises on at least
  NOISY_RISING of the epochs and jitters by at least NOISY_RESIDUAL in log-loss around a 5-epoch running median
  (`batchlab.analysis.curves.epoch_curve_noise`); *smooth* when it jitters by less than SMOOTH_RESIDUAL around
  that trend (a smooth curve may rise steadily, as an overfitting test loss does); else *a little noisy*.
- **Why** (:func:`why_noise`): SGD's noise is the learning rate times the spread of the per-example gradients. An
  update at batch size B moves by lr x (the mean gradient of B examples), whose random part has size
  lr x sqrt(tr(Sigma) / B) (Sigma: the covariance of per-example gradients, measured as `trace_sigma`; McCandlish et
  al. 2018). It fades when the training set is interpolated (:func:`fitted`: train loss below FITTED_FRACTION of
  its initial value): fitted examples have no gradient left. A full batch has no random part at all.
- **Which took longer** (:func:`time_sentence`): the batch size with more training time (compile time excluded;
  per replica when a group trains several runs in one program, which share its clock) is named, and explained by
  the identity time = updates x cost per update, with both factors measured: it made more updates, or its updates
  cost more, whichever holds.
- **Converged or not** (:func:`progress_sentence`): still falling by more than STILL_FALLING of its value over the
  last 10 epochs is *not converged*; otherwise *levelled off*, and, if it levelled off above a smaller batch's final
  loss, that is said too.
- **Overfitting or instability** (:func:`test_rise_sentence`, :func:`instability`): a test loss that ends over
  TEST_RISE x its minimum is *instability* when the train loss rose too (it ended over TEST_RISE x its own minimum,
  went above its initial value, or jumped UNSTABLE_JUMP-fold between epochs: Adam at too high a rate), and
  *overfitting* when the train loss kept falling.
- **Diverged, blown up, interrupted, one batch size** (:func:`status_sentences`): named with their numbers; a study
  in which no run trained to the end says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from batchlab.analysis.curves import PUZZLE_FROM_EPOCH, EpochCurveNoise, epoch_curve_noise
from batchlab.analysis.runs import RunSummary
from batchlab.report.labels import metric_text
from batchlab.spec import BLOWUP_FACTOR

NOISY_RISING = 0.25
"""A per-epoch curve that rises on at least this fraction of its epochs after epoch 10 (and jitters by
NOISY_RESIDUAL) is called noisy: the puzzle's batch size 1 curve rises on about half of them."""
NOISY_RESIDUAL = 0.02
"""... and whose log-loss jitters by at least this much (2%) around its 5-epoch running median."""
SMOOTH_RESIDUAL = 0.005
"""A curve whose log-loss stays within this (0.5%) of its 5-epoch running median after epoch 10 is called smooth,
whichever way its trend goes."""
FITTED_FRACTION = 0.01
"""A run whose final train loss is below this fraction of its initial loss has fitted (interpolated) its training
set: per-example gradients are then near 0, and SGD's noise with them."""
STILL_FALLING = 0.01
"""A train loss that fell by more than 1% of its value over the last 10 epochs has not converged."""
TEST_RISE = 1.1
"""A test loss that ends more than 10% above its minimum rose."""
UNSTABLE_JUMP = 10.0
"""A train loss that jumps by more than this factor from one epoch to the next, or rises above its initial
(epoch-0) value after training started, is unstable (below BLOWUP_FACTOR x it, which makes a run diverged)."""
TAIL_EPOCHS = 10
FINISHED = ("completed", "diverged")
"""Statuses of runs that trained to their end (a diverged run's end is its divergence)."""


@dataclass(frozen=True)
class Side:
    """One batch size's runs that did not diverge, as the answer compares them: seed means."""

    batch_size: int
    runs: list[RunSummary]
    train_loss: np.ndarray
    """Seed-mean train loss per epoch, epoch 0 first (over the epochs every run reached)."""
    test_loss: np.ndarray
    trace_sigma: np.ndarray
    """Seed-mean tr(Sigma) per epoch, NaN where not measured."""
    n_train: int

    def mean(self, attr: str) -> float:
        return float(np.mean([getattr(r, attr) for r in self.runs]))

    @property
    def name(self) -> str:
        return f"the full batch (B = N = {self.n_train:,})" if self.batch_size == self.n_train else \
            f"batch size {self.batch_size:,}"

    @property
    def short(self) -> str:
        return "the full batch" if self.batch_size == self.n_train else f"batch size {self.batch_size:,}"

    @property
    def time_s(self) -> float:
        """Training time per replica (= the run's own time when its group trains one run)."""
        return self.mean("time_per_replica_s")

    @property
    def updates(self) -> float:
        return self.mean("total_updates")

    @property
    def cost_per_update_s(self) -> float:
        return self.time_s / self.updates if self.updates else float("nan")

    @property
    def shared(self) -> bool:
        return any(r.group_replicas > 1 for r in self.runs)

    def noise(self, curve: str) -> EpochCurveNoise:
        return epoch_curve_noise(self.train_loss if curve == "train" else self.test_loss)


def sides(runs: list[RunSummary], epochs: dict[str, dict[str, np.ndarray]], n_train: int) -> list[Side]:
    """Batch sizes in increasing order, seed means of the runs that did not diverge."""
    by_b: dict[int, list[RunSummary]] = {}
    for s in runs:
        if s.status != "diverged":
            by_b.setdefault(s.batch_size, []).append(s)
    out = []
    for b, group in sorted(by_b.items()):
        n = min(len(epochs[r.run_id]["train_loss"]) for r in group)
        mean = {k: np.mean([np.asarray(epochs[r.run_id][k], float)[:n] for r in group], axis=0)
                for k in ("train_loss", "test_loss")}
        sigma = [np.asarray(epochs[r.run_id].get("trace_sigma", np.full(n, np.nan)), float)[:n] for r in group]
        out.append(Side(b, group, mean["train_loss"], mean["test_loss"], np.mean(sigma, axis=0), n_train))
    return out


def curve_kind(noise: EpochCurveNoise) -> str:
    """`noisy`, `smooth` or `a little noisy` by the thresholds above (`unmeasured` for a curve too short)."""
    if not np.isfinite(noise.rising):
        return "unmeasured"
    if noise.rising >= NOISY_RISING and noise.residual >= NOISY_RESIDUAL:
        return "noisy"
    if noise.residual < SMOOTH_RESIDUAL:
        return "smooth"
    return "a little noisy"


def _course(noise: EpochCurveNoise) -> str:
    """How one per-epoch curve went after epoch 10, in words with its two numbers."""
    if noise.rising == 0:
        return "fell at every epoch"
    if curve_kind(noise) == "smooth":
        steady = "rose steadily" if noise.rising >= 0.5 else "fell steadily"
        return f"{steady} (up on {noise.rising:.0%} of the epochs, within {_pct(noise.residual)} of its trend)"
    return f"went up on {noise.rising:.0%} of the epochs, jittering by {_pct(noise.residual)} around its trend"


def _pct(x: float) -> str:
    return f"{x:.2%}" if x < 0.001 else f"{x:.1%}"


def _rises(side: Side) -> str:
    """'train and test losses fell at every epoch', or each curve's course: the subject is the side's losses."""
    tr, te = side.noise("train"), side.noise("test")
    if tr.rising == 0 and te.rising == 0:
        return "train and test losses fell at every epoch"
    return f"train loss {_course(tr)}, and its test loss {_course(te)}"


def noise_sentence(small: Side, large: Side) -> str:
    """Which per-epoch curve is noisy, by :func:`curve_kind` of both curves of both sides, with the numbers."""
    n_epochs = len(small.train_loss) - 1
    if n_epochs <= PUZZLE_FROM_EPOCH + 1:
        return (f"With {n_epochs} epochs there are too few per-epoch evaluations after epoch {PUZZLE_FROM_EPOCH} to "
                "call a curve noisy or smooth.")
    kinds = {side.batch_size: {curve_kind(side.noise("train")), curve_kind(side.noise("test"))}
             for side in (small, large)}
    after = f"After epoch {PUZZLE_FROM_EPOCH}"
    s_kind = "noisy" if kinds[small.batch_size] == {"noisy"} else \
        "smooth" if kinds[small.batch_size] == {"smooth"} else "partly noisy"
    l_kind = "noisy" if kinds[large.batch_size] == {"noisy"} else \
        "smooth" if kinds[large.batch_size] == {"smooth"} else "partly noisy"
    if s_kind == "noisy" and l_kind == "smooth":
        lead = f"{_upper(small.short)}'s curves are the noisy ones."
    elif s_kind == "smooth" and l_kind == "smooth":
        lead = "Neither run's per-epoch curves are noisy here."
    else:
        lead = f"{_upper(small.short)}'s per-epoch curves are {s_kind}, {large.short}'s {l_kind}."
    return f"{lead} {after}, {small.short}'s {_rises(small)}; {large.short}'s {_rises(large)}."


def fitted(side: Side) -> bool:
    """The run interpolated its training set: final train loss below FITTED_FRACTION x its initial loss."""
    return bool(side.train_loss[-1] < FITTED_FRACTION * side.train_loss[0])


def why_noise(small: Side, large: Side, lr: float, optimizer: str = "sgd") -> str:
    """Why the curves look as they do: SGD's noise lr x sqrt(tr(Sigma) / B), measured where tr(Sigma) was, and
    whether it faded (the training set fitted) or stayed (not fitted). For Adam the size of a step does not follow
    the gradient's (it is divided by a running estimate of it), which is said instead of the SGD formula."""
    examples = "one example" if small.batch_size == 1 else f"{small.batch_size:,} examples"
    text = (f"Why: each update of {small.short} follows the gradient of {examples}, and examples pull in different "
            "directions, so the model zig-zags;")
    if large.batch_size == large.n_train:
        text += " the full batch follows the average gradient over all examples, the same at every step, so it does not."
    else:
        text += f" {large.short} averages {large.batch_size:,} examples, which cancels most of the zig-zag."
    measured = np.flatnonzero(np.isfinite(small.trace_sigma))
    size = ""
    if optimizer == "adam":
        return text + (" With Adam the size of a step does not shrink with the gradient: each is divided by a "
                       "running estimate of the gradient's own size, so steps stay about lr long even when the "
                       "examples are fitted, and SGD's rule (noise = lr x the gradients' spread) does not apply.")
    if len(measured) >= 2:
        first, last = small.trace_sigma[measured[0]], small.trace_sigma[measured[-1]]
        step = lr * np.sqrt(last / small.batch_size)
        size = (f" The size of that zig-zag is the learning rate times the spread of the per-example gradients, "
                f"lr x sqrt(tr(Sigma) / B): tr(Sigma), the measured variance of per-example gradients, went from "
                f"{_g(first)} at the start to {_g(last)} at epoch {measured[-1]}, so the random part of an update at "
                f"{small.short} was {_g(step)} at the end (lr {lr:g}).")
    if optimizer == "momentum":
        size += " (That is plain SGD's rule; heavy-ball momentum multiplies the step by about 1 / (1 - momentum).)"
    if fitted(small):
        smooth = curve_kind(small.noise("train")) == "smooth"
        text += size + (f" It faded because {small.short} fitted the training set (train loss "
                        f"{_g(small.train_loss[-1])}, from {_g(small.train_loss[0])}): an example the model already "
                        "fits has no gradient left, so at the end the updates barely move"
                        + (" and the per-epoch curve goes smooth. The step-to-step jitter stays in the per-step "
                           "losses." if smooth else "."))
    else:
        share = float(small.train_loss[-1] / small.train_loss[0]) if small.train_loss[0] > 0 else float("nan")
        text += size + (f" It stays because {small.short} did not fit its training set (train loss "
                        f"{_g(small.train_loss[-1])} at the end, {share:.0%} of its initial {_g(small.train_loss[0])}): "
                        "its examples keep pulling in different directions, as on data with overlapping classes.")
    return text


def time_sentence(small: Side, large: Side, device: str) -> str:
    """Name the side with more training time and explain it by time = updates x cost per update."""
    longer, shorter = (small, large) if small.time_s >= large.time_s else (large, small)
    per = " per run" if small.shared or large.shared else ""
    text = (f"{_upper(longer.short)} took longer: {_s(longer.time_s)} of training{per} against {_s(shorter.time_s)} "
            f"(compile time excluded; {device}). ")
    u_l, u_s, c_l, c_s = longer.updates, shorter.updates, longer.cost_per_update_s, shorter.cost_per_update_s
    if u_l > u_s and c_l <= c_s:
        text += (f"It made {_x(u_l, u_s)} as many updates ({u_l:,.0f} against {u_s:,.0f}); each was cheaper "
                 f"({_us(c_l)} against {_us(c_s)}), but only {_x(c_s, c_l)} cheaper, so the number of updates won.")
    elif u_l > u_s:
        text += (f"It made more updates ({u_l:,.0f} against {u_s:,.0f}) and each cost more ({_us(c_l)} against "
                 f"{_us(c_s)}).")
    elif u_l < u_s:
        text += (f"It made fewer updates ({u_l:,.0f} against {u_s:,.0f}), but each cost {_x(c_l, c_s)} as much "
                 f"({_us(c_l)} against {_us(c_s)}: an update at batch size {longer.batch_size:,} processes "
                 f"{longer.batch_size:,} examples), so the cost per update won.")
    else:
        text += f"Both made {u_l:,.0f} updates; each of its updates cost {_x(c_l, c_s)} as much ({_us(c_l)} against {_us(c_s)})."
    return text


def progress_sentence(small: Side, large: Side, task: str) -> str:
    """What the large batch's updates achieved, converged or not (STILL_FALLING), against the small batch."""
    curve = large.train_loss
    start, end = float(curve[0]), float(curve[-1])
    k = _first_at_or_below(small.train_loss, end)
    reached = (f"{small.short} was there after {k} epoch{'s' if k != 1 else ''}" if k is not None
               else f"{small.short} never got that low")
    tail = curve[-(TAIL_EPOCHS + 1):]
    drop = (float(tail[0]) - float(tail[-1])) / float(tail[0]) if tail[0] > 0 else 0.0
    n = len(tail) - 1
    if drop > STILL_FALLING:
        state = (f"It had not converged: it was still falling, by {drop:.1%} over its last {n} epochs, so more "
                 "updates would have taken it further.")
    else:
        change = "less than 0.1%" if abs(drop) < 0.001 else f"{-drop:+.1%}"
        state = f"It had levelled off: it changed by {change} over its last {n} epochs"
        small_end = float(small.train_loss[-1])
        state += (f", at a loss {_x(end, small_end)} {small.short}'s final {_g(small_end)}: a plateau, not the "
                  "bottom." if end > TEST_RISE * small_end else ".")
    metric = "R²" if task == "regression" else "accuracy"
    return (f"{_upper(large.short)}'s {large.updates:,.0f} updates took its train loss from {_g(start)} to {_g(end)} "
            f"(test {metric} {metric_text(large.mean('final_test_acc'), task)}); {reached}. {state} "
            f"{_upper(small.short)} ended at train loss {_g(float(small.train_loss[-1]))} (test {metric} "
            f"{metric_text(small.mean('final_test_acc'), task)}).")


def instability(side: Side) -> str:
    """'' for a stable train loss, else what made it unstable (UNSTABLE_JUMP), with its numbers."""
    train = np.asarray(side.train_loss, float)
    if len(train) < 3:
        return ""
    peak = int(np.argmax(train[1:])) + 1
    if train[peak] > train[0]:
        return f"rose above its starting value ({_g(train[0])}) to {_g(train[peak])} at epoch {peak}"
    jumps = train[2:] / np.maximum(train[1:-1], np.finfo(float).tiny)
    worst = int(np.argmax(jumps))
    if jumps[worst] > UNSTABLE_JUMP:
        return f"jumped {_x(jumps[worst], 1.0)} from epoch {worst + 1} to {worst + 2}"
    return ""


def test_rise_sentence(side: Side) -> str:
    """Overfitting (train loss kept falling after the test minimum) or instability (train loss rose too); '' when
    the test loss did not rise (ended within TEST_RISE of its minimum)."""
    test, train = side.test_loss, side.train_loss
    best = int(np.argmin(test))
    if not test[-1] > TEST_RISE * test[best]:
        return ""
    rose = f"{_upper(side.short)}'s test loss was lowest at epoch {best} ({_g(test[best])}) and ended at {_g(test[-1])}"
    train_min = float(np.min(train))
    if train[-1] > TEST_RISE * train_min:
        return (f"{rose}, and its train loss rose too (from {_g(train_min)} at its lowest to {_g(train[-1])}): the "
                "training is unstable at this learning rate, not overfitting.")
    unstable = instability(side)
    if unstable:
        return (f"{rose}, and its train loss {unstable}: the training is unstable at this learning rate, not "
                "overfitting.")
    if best == 0:
        return (f"{rose}: while its train loss fell (to {_g(train[-1])}), the test loss never improved on the "
                "untrained model, so it fitted the training set without learning what carries over.")
    return (f"{rose} while its train loss kept falling (to {_g(train[-1])}): overfitting, fitting the training set "
            "more closely than what carries over to new data.")


def status_sentences(all_runs: list[RunSummary]) -> list[str]:
    """Diverged runs (blown up or non-finite) and runs that did not train to the end, with their numbers."""
    out = []
    diverged = [s for s in all_runs if s.status == "diverged"]
    blown = [s for s in diverged if s.blown_up]
    nan = [s for s in diverged if not s.blown_up]
    if blown:
        worst = max(blown, key=lambda s: s.final_train_loss / s.initial_train_loss)
        whose = "Its train loss" if len(blown) == 1 else "The train loss of each"
        out.append(f"{_count(blown)} blew up: {_which(blown)}. {whose} passed {BLOWUP_FACTOR:g}x its initial "
                   f"value (e.g. {_g(worst.final_train_loss)} from {_g(worst.initial_train_loss)} at batch size "
                   f"{worst.batch_size:,}, lr {worst.lr:g}, epoch {worst.diverged_epoch}), so it is counted as "
                   "diverged from that epoch and left out of the comparison and of the best-rate choice.")
    if nan:
        out.append(f"{_count(nan)} diverged: {_which(nan)}: the loss became non-finite (inf or NaN), and the run is "
                   "left out of the comparison.")
    unfinished = [s for s in all_runs if s.status not in FINISHED]
    if unfinished and len(unfinished) == len(all_runs):
        out.append(f"None of the {len(all_runs)} runs trained to the end ({_statuses(unfinished)}; they reached "
                   f"{_epochs_reached(unfinished)}): what follows describes the epochs they reached. `batchlab "
                   "resume DIR` finishes them.")
    elif unfinished:
        out.append(f"{_count(unfinished)} did not train to the end ({_statuses(unfinished)}; "
                   f"{_epochs_reached(unfinished)}); `batchlab resume DIR` finishes them.")
    return out


def answer(runs: list[RunSummary], epochs: dict[str, dict[str, np.ndarray]], *, all_runs: list[RunSummary],
           n_train: int, device: str, task: str = "classification", optimizer: str = "sgd") -> list[str]:
    """The answer's paragraphs: the puzzle in plain words (which curve is noisy, which took longer, why), then
    what the updates achieved. `runs` are the compared runs (each batch size at its best rate); `all_runs` every
    run, for the status sentences."""
    notes = status_sentences(all_runs)
    compared = sides(runs, epochs, n_train)
    if not compared:
        return [" ".join(notes + ["No run trained without diverging, so there is nothing to compare."])]
    if len(compared) == 1:
        only = compared[0]
        lost = sorted({s.batch_size for s in all_runs} - {only.batch_size})
        others = (f" without diverging (batch size{'s' if len(lost) > 1 else ''} {', '.join(f'{b:,}' for b in lost)} "
                  "diverged)") if lost else ""
        per = " per run" if only.shared else ""
        text = (f"Only {only.name} trained{others}, so there is no other batch size to compare it with. "
                f"After epoch {PUZZLE_FROM_EPOCH}, its {_rises(only)}. It took {_s(only.time_s)}{per} for {only.updates:,.0f} updates ({_us(only.cost_per_update_s)} each).")
        return [" ".join(notes + [text])]
    small, large = compared[0], compared[-1]
    lr = float(np.mean([r.lr for r in small.runs]))
    seeds = f" (means over {len(small.runs)} seeds)" if len(small.runs) > 1 else ""
    first = " ".join([noise_sentence(small, large) + seeds, time_sentence(small, large, device)])
    paragraphs = [" ".join(notes), first] if notes else [first]
    paragraphs.append(why_noise(small, large, lr, optimizer))
    rest = [progress_sentence(small, large, task)]
    for side in (small, large):
        rise, unstable = test_rise_sentence(side), instability(side)
        if rise:
            rest.append(rise)
        elif unstable:
            rest.append(f"{_upper(side.short)}'s train loss {unstable}: the training is unstable at this learning "
                        "rate.")
    paragraphs.append(" ".join(rest))
    if len(compared) > 2:
        paragraphs.append("All batch sizes" + (" (time per run: a group's runs train together and share its "
                                               "clock)" if any(s.shared for s in compared) else "") + ": "
                          + "; ".join(f"B = {s.batch_size:,}: {_s(s.time_s)} for {s.updates:,.0f} updates "
                                      f"({_us(s.cost_per_update_s)} each), per-epoch train loss "
                                      f"{curve_kind(s.noise('train'))}" for s in compared) + ".")
    elif small.shared or large.shared:
        n = max(r.group_replicas for s in compared for r in s.runs)
        paragraphs[-1] += (f" Times are per run: the runs of one batch size (up to {n}) train together in one "
                           "program and share its clock, so each run's share is the group's time divided by them.")
    return paragraphs


def _first_at_or_below(curve: np.ndarray, value: float) -> int | None:
    hits = np.flatnonzero(np.asarray(curve) <= value)
    return int(hits[0]) if len(hits) else None


def _count(runs: list[RunSummary]) -> str:
    return "One run" if len(runs) == 1 else f"{len(runs)} runs"


def _which(runs: list[RunSummary]) -> str:
    by: dict[tuple[int, float], list[RunSummary]] = {}
    for s in runs:
        by.setdefault((s.batch_size, s.lr), []).append(s)
    return "; ".join(f"batch size {b:,} at lr {lr:g} (seed{'s' if len(g) > 1 else ''} "
                     f"{', '.join(str(s.seed) for s in g)}, epoch{'s' if len(g) > 1 else ''} "
                     f"{', '.join(str(s.diverged_epoch) for s in g)})" for (b, lr), g in sorted(by.items()))


def _statuses(runs: list[RunSummary]) -> str:
    counts: dict[str, int] = {}
    for s in runs:
        counts[s.status] = counts.get(s.status, 0) + 1
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))


def _epochs_reached(runs: list[RunSummary]) -> str:
    done = sorted({s.epochs_done for s in runs})
    return f"epoch {done[0]}" if len(done) == 1 else f"epochs {done[0]} to {done[-1]}"


def _upper(text: str) -> str:
    return text[:1].upper() + text[1:]


def _g(x: float) -> str:
    """A number in at most 4 significant digits, never a 9-digit one: 0.2005, 1.35e6, 2.1e-5."""
    x = float(x)
    if not np.isfinite(x):
        return str(x)
    if abs(x) >= 1e5 or (x != 0 and abs(x) < 1e-3):
        mantissa, exponent = f"{x:.2e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{x:.4g}"


def _s(seconds: float) -> str:
    return f"{seconds:.3g} s"


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f} µs" if seconds * 1e6 < 1000 else f"{seconds * 1e3:,.2f} ms"


def _x(a: float, b: float) -> str:
    """a / b as '2.6x' (at least 1 by construction of the callers)."""
    if not (np.isfinite(a) and np.isfinite(b)) or b == 0:
        return "n/a times"
    r = a / b
    return f"{r:,.0f}x" if r >= 100 else f"{r:.1f}x"
