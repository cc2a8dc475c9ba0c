"""The self-contained HTML report: one `report.html` per study that opens in any browser without a network.

plotly.js is inlined once, in the page head; each figure follows as its JSON and one `Plotly.newPlot` call.
Every user-provided string (dataset path and name, target column, run ids, config values) is HTML-escaped;
figure JSON comes from plotly's encoder, which writes `<`, `>` and `/` as `\\u003c`, `\\u003e`, `\\u002f`, so it
cannot close its script element. Sections for the optional analyses (gradient noise scale, steps to target,
end-of-training metrics) appear only when the study holds their data.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from batchlab.errors import invalid
from batchlab.report.explain import explanation
from batchlab.store.db import check_outside_study, write_atomic
from batchlab.study_data import StudyData

REPORT_NAME = "report.html"
PLOT_CONFIG = {"responsive": True, "displaylogo": False}
STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 1320px;
       padding: 0 24px 48px; color: #222; line-height: 1.45; }
h1 { margin-top: 24px; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 40px; }
nav a { margin-right: 14px; } .note { color: #555; font-size: 0.92em; }
.scroll { overflow-x: auto; } table { border-collapse: collapse; font-size: 0.82em; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 3px 6px; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; } td.text, th.text { text-align: left; } tr:nth-child(even) td { background: #fafafa; }
td.best { font-weight: bold; background: #e8f4e8 !important; } caption { caption-side: bottom; text-align: left; }
dl { display: grid; grid-template-columns: max-content auto; gap: 4px 16px; } dt { font-weight: bold; }
dd { margin: 0; } pre { background: #f6f6f6; padding: 12px; overflow-x: auto; font-size: 0.85em; }
.plot { width: 100%; margin: 8px 0 24px; }
"""


def write_report(data: StudyData, path: Path | None = None) -> Path:
    """Write the study's report (default `<study dir>/report.html`) and return its path. The file is written
    beside its destination and then renamed, so a reader never sees half a report."""
    path = Path(path) if path is not None else Path(data.directory) / REPORT_NAME
    if path.is_dir():
        raise invalid("out", str(path), "the path of an HTML file to write (this is a directory)")
    check_outside_study("out", path, data.directory)
    page = render_report(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, lambda partial: partial.write_text(page, encoding="utf-8"))


def render_report(data: StudyData) -> str:
    """The whole page as one string."""
    from plotly.offline import get_plotlyjs

    analysis = data.analysis()
    sections = [s for s in (_setup(data), _explanation(data), _runs(data), _grid(data), _optimal_lr(data),
                            _lena(data), _overlay(data), _cost(data), _gns(data, analysis),
                            _scaling(analysis), _cbs(data, analysis), _sharpness(data), _end_metrics(data, analysis),
                            _config(data)) if s]
    nav = " ".join(f'<a href="#{anchor}">{escape(title)}</a>' for anchor, title, _ in sections)
    body = "\n".join(f'<section id="{anchor}"><h2>{escape(title)}</h2>\n{content}</section>'
                     for anchor, title, content in sections)
    title = f"batchlab report: {data.meta['dataset']['name']}"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n<title>{escape(title)}</title>\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<style>{STYLE}</style>\n'
            "<script>window.PlotlyConfig = {MathJaxConfig: 'local'};</script>\n"
            f"<script>{get_plotlyjs()}</script>\n</head><body>\n<h1>{escape(title)}</h1>\n"
            f'<p class="note">{escape(str(data.directory))}: {escape(data.setup)}</p>\n<nav>{nav}</nav>\n'
            f"{body}\n</body></html>\n")


Section = tuple[str, str, str]
"""(anchor, title, HTML content)."""


def _plot(fig, div_id: str) -> str:
    """A figure's div and the script that draws it (plotly.js is already loaded in the head)."""
    return (f'<div id="{div_id}" class="plot"></div>\n<script>(function () {{ const f = {fig.to_json()};\n'
            f'Plotly.newPlot("{div_id}", f.data, f.layout, {json.dumps(PLOT_CONFIG)}); }})();</script>\n')


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], *, caption: str = "", text_columns: int = 1,
           best: Iterable[tuple[int, int]] = ()) -> str:
    """An escaped HTML table; the first `text_columns` columns are left-aligned; `best` marks (row, column)."""
    marked = set(best)

    def cell(tag: str, value: Any, i: int, j: int) -> str:
        classes = " ".join(c for c, on in (("text", j < text_columns), ("best", (i, j) in marked)) if on)
        attribute = f' class="{classes}"' if classes else ""
        return f"<{tag}{attribute}>{escape(str(value))}</{tag}>"

    head = "".join(cell("th", h, -1, j) for j, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", v, i, j) for j, v in enumerate(row)) + "</tr>\n"
                   for i, row in enumerate(rows))
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    return f'<div class="scroll"><table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>\n'


def _setup(data: StudyData) -> Section:
    spec, ds, meta = data.meta["spec"], data.meta["dataset"], data.meta
    axes = {name: values for name, values in meta.get("axes", [])}
    scaling = "standardized with training statistics" if spec["standardize"] else "raw"
    target = (f"{ds['n_classes']} classes; stratified split" if data.task != "regression" else
              f"regression (target standardized: training mean {ds['target_mean']:.4g}, std {ds['target_std']:.4g}; "
              "loss = mean squared error of the standardized target, R² in place of accuracy); random split")
    described = (f"{ds['name']}: {ds['n_train']:,} train and {ds['n_test']:,} test examples, {ds['n_features']} "
            f"features, {target} (test fraction {spec['test_fraction']}, split seed {spec['split_seed']}); "
            f"features {scaling}")
    if ds["name"] == "mnist1d":  # generated by the mnist1d package with its own split (issue 13)
        described = (f"mnist1d: {ds['n_train']:,} train and {ds['n_test']:,} test sequences of {ds['n_features']} "
                     f"values, {ds['n_classes']} classes (the mnist1d package's generator and split, the paper's "
                     f"arguments); features {scaling}")
    if data.task == "next_token":  # text (issue 13): sequences of characters, its own contiguous split
        described = (f"{ds['name']}: {ds['n_train']:,} train and {ds['n_test']:,} held-out sequences of "
                     f"{ds['context']} characters (the last 10% of the text), vocabulary {ds['vocab_size']} "
                     "characters; loss = cross-entropy per character in nats, perplexity = exp(loss)")
    rows = [("Dataset", described)]
    if spec.get("target"):
        rows.append(("Data file, target", f"{spec['dataset']}, {spec['target']}"))
    if spec.get("features"):
        rows.append(("Features used", ", ".join(spec["features"])))
    rows.append(("Model", str(meta["model"])))
    lr = ", ".join(f"{v:g}" for v in axes["lr"]) if "lr" in axes else f"{spec['lr']:g}"
    optimizer = f"{spec['optimizer']}" + (f" (momentum {spec['momentum']})" if spec["optimizer"] == "momentum" else "")
    optimizer += f", learning rate {lr}"
    if spec.get("lr_scaling", "none") != "none":
        optimizer += f" at batch size {spec['base_batch_size']}, {spec['lr_scaling']} scaling"
    if spec.get("warmup_epochs"):
        optimizer += f", {spec['warmup_epochs']} warmup epochs"
    rows.append(("Optimizer", optimizer))
    sizes = ", ".join(f"{b:,}" + (" (full)" if b == data.n_train else "") for b in meta.get("batch_sizes", []))
    rows.append(("Batch sizes", sizes))
    seeds, first, first_order = int(spec["seeds"]), spec["seed"], spec["order_seed"]
    if seeds == 1:
        rows.append(("Seeds", f"1 (initialization seed {first}, data-order seed {first_order})"))
    else:
        rows.append(("Seeds", (f"{seeds}: initialization seeds {first}..{first + seeds - 1}, data-order seeds "
                               f"{first_order}..{first_order + seeds - 1} (seed i uses both i-th seeds)")))
    length = f"{spec['epochs']} epochs"
    if spec.get("budget_steps") or spec.get("budget_examples"):
        length = f"budget: {spec.get('budget_steps') or spec.get('budget_examples'):,} " + \
                 ("updates" if spec.get("budget_steps") else "examples") + " per run"
    rows.append(("Training", length))
    other_axes = {k: v for k, v in axes.items() if k != "lr"}
    if other_axes:
        rows.append(("Other sweep axes", "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in other_axes.items())))
    rows.append(("Device", str(meta.get("device", "unknown"))))
    if meta.get("created_at"):
        rows.append(("Created", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(meta["created_at"]))))
    content = "<dl>" + "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in rows) + "</dl>\n"
    return "setup", "Setup", content


def _explanation(data: StudyData) -> Section:
    paragraphs = [p.strip() for p in explanation(data).split("\n\n") if p.strip()]
    return "explanation", "What the measurements say", "".join(f"<p>{escape(p)}</p>\n" for p in paragraphs)


def _runs(data: StudyData) -> Section:
    from batchlab.report.tables import RUNS_CAPTION, perplexity_note, run_columns, run_row

    rows = [run_row(s, task=data.task) for s in data.summaries]
    caption = RUNS_CAPTION + ("; " + perplexity_note(data.summaries) if data.task == "next_token" else "")
    return "runs", "Runs", _table(run_columns(data.task), rows, caption=caption)


def _grid(data: StudyData) -> Section | None:
    if len({(s.lr, s.seed) for s in data.summaries}) < 2:
        return None
    from batchlab.analysis.sweeps import best_lr_per_batch_size
    from batchlab.report.tables import GRID_CAPTION, grid_cell_text

    cells = data.cells
    best = best_lr_per_batch_size(cells)
    lrs = sorted({c.lr for c in cells})
    rows, marked = [], []
    for i, b in enumerate(sorted({c.batch_size for c in cells})):
        row = [f"{b:,}"]
        for j, lr in enumerate(lrs):
            cell = next((c for c in cells if c.batch_size == b and c.lr == lr), None)
            row.append(grid_cell_text(cell, best=best.get(b) == lr))
            if best.get(b) == lr:
                marked.append((i, j + 1))
        rows.append(row)
    return "grid", "Sweep grid", _table(["batch size", *(f"lr {lr:.3g}" for lr in lrs)], rows,
                                        caption=GRID_CAPTION, best=marked)


def _optimal_lr(data: StudyData) -> Section | None:
    from batchlab.report.optimal_lr import CAPTION, optimal_lr_paragraph, optimal_lr_rows

    results = data.optimal_lr()
    if not results:
        return None
    header, rows = optimal_lr_rows(results)
    return ("optimal-lr", "Optimal learning rate against batch size",
            _table(header, rows, caption=CAPTION) + f"<p>{escape(optimal_lr_paragraph(results))}</p>")


def _sharpness(data: StudyData) -> Section | None:
    """Sharpness during training (`sharpness_every`) against 2 / lr, one row per run."""
    rows = data.edges_of_stability()
    if not rows:
        return None
    header = ["run", "batch size", "lr", "2 / lr", "λ_max·lr/2 first", "late", "peak", "batch sharpness·lr/2 late",
              "edge of stability"]
    body = [[r.run_id, f"{r.batch_size:,}", f"{r.lr:g}", f"{r.threshold:.4g}", f"{r.first_ratio:.3f}",
             f"{r.late_ratio:.3f}", f"{r.peak_ratio:.3f}", _fmt(r.late_batch_ratio, "{:.3f}"),
             "reached" if r.reached else "not reached"] for r in rows]
    return ("sharpness", "Sharpness over training", _table(
        header, body, caption="late = median over the last quarter of the measured epochs; reached = within 10% "
        "of 2 / lr (Cohen et al. 2021); figures/sharpness.png draws the curves"))


def _lena(data: StudyData) -> Section:
    from batchlab.report import interactive

    best = data.best_runs()
    intro = ("Left: train and test loss after each epoch. Right: every minibatch loss as measured (long curves are "
             "min/max-decimated: each bucket's lowest and highest step is kept, nothing is smoothed).")
    if len(best) < len(data.summaries):
        intro += " In a sweep, only the runs at each batch size's best learning rate are shown."
    parts = [f'<p class="note">{escape(intro)}</p>']
    for i, s in enumerate(best):
        parts.append(f"<h3>{escape(s.run_id)}</h3>")
        parts.append(_plot(interactive.lena_figure(s, data.epochs[s.run_id], data.steps[s.run_id],
                                                   n_train=data.n_train, task=data.task), f"plot-lena-{i}"))
    return "lena", "Lena's figure, per run", "\n".join(parts)


def _overlay(data: StudyData) -> Section:
    from batchlab.report import interactive

    note = ("All batch sizes (at their best learning rate) together. The buttons switch the x-axis between epochs, "
            "optimizer steps, examples seen and training wall time; the band is ± one standard deviation over seeds.")
    fig = interactive.overlay_figure(data.best_runs(), data.epochs, n_train=data.n_train)
    return "overlay", "All batch sizes, overlaid", f'<p class="note">{escape(note)}</p>{_plot(fig, "plot-overlay")}'


def _cost(data: StudyData) -> Section:
    from batchlab.report import interactive

    fig = interactive.cost_figure(data.summaries, data.best_runs(), n_train=data.n_train)
    return "cost", "Cost per update", _plot(fig, "plot-cost")


def _gns(data: StudyData, analysis: Any) -> Section | None:
    from batchlab.report import interactive

    fit = getattr(analysis, "fit", None)
    b_crit = None
    if fit is not None and getattr(fit, "b_crit", None) is not None:
        b_crit = (float(fit.b_crit), float(getattr(fit, "b_crit_low", np.nan)),
                  float(getattr(fit, "b_crit_high", np.nan)))
    fig = interactive.gns_figure(data.best_runs(), data.epochs, n_train=data.n_train, b_crit=b_crit)
    if fig is None:
        return None
    note = ("B_simple (McCandlish et al. 2018) at fixed parameters, measured at the epochs shown. It is a proxy for "
            "the critical batch size and is known to disagree with the B_crit measured from steps to target")
    note += ", shown beside it." if b_crit else "; this study has no S(B) fit to compare it with."
    return "gns", "Gradient noise scale", f'<p class="note">{escape(note)}</p>{_plot(fig, "plot-gns")}'


def _cbs(data: StudyData, analysis: Any) -> Section | None:
    """CBS(t) from `batchlab branch` beside B_simple(t) and the sweep's B_crit (none without branches)."""
    from batchlab.analysis.cbs import DEFAULT_TOLERANCE, critical_batch_sizes, parents_b_simple
    from batchlab.report import interactive

    if not data.branches:
        return None
    rows = critical_batch_sizes(data.branches, data.epochs)
    fit = getattr(analysis, "fit", None)
    fig = interactive.cbs_figure(rows, parents_b_simple(data.branches, data.epochs, [r["epoch"] for r in rows]),
                                 b_crit=None if fit is None else float(fit.b_crit))
    if fig is None:
        return None
    note = (f"From each branch point the parent's full state trained on at k x B for the same examples; CBS is the "
            f"largest k x B whose smoothed training loss stays within {DEFAULT_TOLERANCE:g} of every smaller batch "
            "(Merrill et al. 2025). B_simple is the gradient noise scale of the parents at those epochs.")
    table = _table(["epoch", "B", "CBS", "seed range", "loss by k"],
                   [[r["epoch"], r["base_batch_size"], _fmt(r["cbs"], ","),
                     "" if r["cbs_low"] is None else f"{r['cbs_low']:,}-{r['cbs_high']:,}",
                     " ".join(f"{k}: {v:.4f}" for k, v in zip(r["multipliers"], r["losses"]))] for r in rows])
    return "cbs", "Critical batch size over training", (f'<p class="note">{escape(note)}</p>{table}' \
        f'{_plot(fig, "plot-cbs")}')


def _numbers(obj: Any) -> dict[str, float]:
    """The numeric fields of a dataclass (or plain object), in declaration order."""
    fields = dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) and not isinstance(obj, type) else dict(vars(obj))
    return {k: float(v) for k, v in fields.items() if isinstance(v, (int, float, np.number)) and not isinstance(v, bool)}


def _scaling(analysis: Any) -> Section | None:
    from batchlab.report import interactive

    stt: Mapping[int, Any] = getattr(analysis, "steps_to_target", None) or {}
    fit = getattr(analysis, "fit", None)
    if not stt and fit is None:
        return None
    parts = [f'<p class="note">{escape(_target_text(analysis))}</p>']
    fig = interactive.steps_to_target_figure(stt, fit) if stt else None
    if fig is not None:
        parts.append(_plot(fig, "plot-scaling"))
    regimes: Mapping[int, str] = getattr(analysis, "regimes", None) or {}
    if stt:
        rows = []
        for b, r in sorted(stt.items(), key=lambda item: int(item[0])):
            steps = getattr(r, "steps", None)
            rows.append([f"{int(b):,}", _fmt(getattr(r, "lr", None), "{:g}"), _fmt(steps, "{:,}"),
                         _fmt(getattr(r, "examples", None), "{:,}"), _fmt(getattr(r, "wall_time_s", None), "{:.3f}"),
                         "yes" if getattr(r, "feasible", steps is not None) else "not reached",
                         *([str(regimes.get(b, ""))] if regimes else [])])
        header = ["batch size", "lr", "steps", "examples", "training time, s", "reached",
                  *(["regime"] if regimes else [])]
        parts.append(_table(header, rows, caption="fewest steps to the target over learning rates and seeds, per "
                            "batch size"))
    fastest = getattr(getattr(analysis, "fastest", None), "batch_size", None)
    if fastest is not None:
        parts.append(f"<p>Fastest to the target in wall time on this hardware: batch size {int(fastest):,}.</p>")
    if fit is not None:
        parts.append("<h3>S(B) = S_min (1 + B_crit / B) fit</h3>")
        parts.append(_table(["field", "value"], [(k, f"{v:.4g}") for k, v in _numbers(fit).items()]))
    note = getattr(analysis, "fit_note", "")
    if note:
        parts.append(f'<p class="note">{escape(str(note))}</p>')
    return "scaling", "Steps to target and critical batch size", "\n".join(parts)


def _target_text(analysis: Any) -> str:
    metric, target = getattr(analysis, "target_metric", None), getattr(analysis, "target", None)
    if target is None:
        return "Target: not recorded."
    value = f"{target:.4g}" if isinstance(target, (int, float)) else str(target)
    if metric is None:
        return f"Target: {value}."
    return f"Target: the first evaluation with {metric.replace('_', ' ')} < {value}."


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "—"
    return spec.format(value)


def _end_metrics(data: StudyData, analysis: Any) -> Section | None:
    """Per run: the generalization gap at the end and at a matched train loss (when the analysis has them), and
    the end-of-training measurements (sharpness and the like)."""
    columns: dict[str, dict[str, float | None]] = {}
    for run_id, gap in (getattr(analysis, "gaps", None) or {}).items():
        for name in ("loss_gap", "acc_gap"):
            label = "R²_gap" if name == "acc_gap" and data.task == "regression" else name
            columns.setdefault(f"{label} (end)", {})[run_id] = getattr(gap, name, None)
    matched_at = getattr(analysis, "matched_target", None)
    for run_id, gap in (getattr(analysis, "matched", None) or {}).items():
        columns.setdefault(f"loss_gap at train loss {matched_at:.4g}", {})[run_id] = getattr(gap, "loss_gap", None)
    metrics: Mapping[str, Mapping[str, float]] = getattr(analysis, "end_metrics", None) or {}
    for run_id, values in metrics.items():
        for name, value in values.items():
            columns.setdefault(name, {})[run_id] = value
    if not columns:
        return None
    order = [s.run_id for s in data.summaries]
    run_ids = [r for r in order if any(r in c for c in columns.values())]
    run_ids += sorted({r for c in columns.values() for r in c} - set(run_ids))
    batch = {s.run_id: f"{s.batch_size:,}" for s in data.summaries}
    rows = [[r, batch.get(r, ""), *(_fmt(c.get(r), "{:.4g}") for c in columns.values())] for r in run_ids]
    caption = ("gap = test minus train; sharpness measures depend on the parametrization (Dinh et al. 2017): compare "
               "them across batch sizes of one model, not across models")
    return "end", "At the end of training: generalization gap and sharpness", _table(
        ["run", "batch size", *columns], rows, caption=caption)


def _config(data: StudyData) -> Section:
    meta = data.meta
    config = json.dumps({"spec": meta["spec"], "axes": meta.get("axes", [])}, indent=2)
    versions = meta.get("versions", {})
    parts = ["<h3>Exact configuration</h3>", f"<pre>{escape(config)}</pre>",
             (f"<p>Device: {escape(str(meta.get('device', 'unknown')))}; study fingerprint "
              f"{escape(str(meta.get('fingerprint', '')))}.</p>"),
             "<h3>Versions</h3>", _table(["package", "version"], list(versions.items()), text_columns=2)]
    return "config", "Configuration and versions", "\n".join(parts)
