"""The HTML report: escaped, self-contained, optional sections only with their data, and in a real headless
Chromium (Debian's `chromium`): no console errors or network requests, plots drawn, the x-axis switch works."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from types import SimpleNamespace

import matplotlib.image as mpimg
import numpy as np
import pytest

from batchlab.analysis.scaling import StepsToTarget
from batchlab.errors import BatchlabError
from batchlab.report.html import render_report, write_report
from batchlab.results import StudyResults
from batchlab.runner.driver import run_study
from batchlab.spec import StudySpec
from tests.report.chromium import Chromium, find_chromium

HOSTILE_FILE = "<img src=x onerror=alert(1)>.csv"
HOSTILE_TARGET = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """wine, batch sizes 1, 16 and full, 8 epochs, 2 seeds: a small real study."""
    out = tmp_path_factory.mktemp("report") / "wine"
    run_study(StudySpec(dataset="wine", batch_sizes=(1, 16, "full"), epochs=8, seeds=2, device="cpu"), out)
    return out


@pytest.fixture(scope="module")
def hostile_study(tmp_path_factory) -> Path:
    """A CSV dataset whose file name and target column are markup."""
    folder = tmp_path_factory.mktemp("hostile")
    rng = np.random.default_rng(0)
    rows = [f"{a:.3f},{b:.3f},{'cat' if a + b > 0 else 'dog'}" for a, b in rng.standard_normal((60, 2))]
    (folder / HOSTILE_FILE).write_text("\n".join([f"a,b,{HOSTILE_TARGET}", *rows]) + "\n")
    out = folder / "study"
    run_study(StudySpec(dataset=str(folder / HOSTILE_FILE), target=HOSTILE_TARGET, batch_sizes=(4, "full"), epochs=3,
                        device="cpu"), out)
    return out


@pytest.fixture(scope="module")
def chromium_path() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip("no chromium on PATH (CI installs Debian's: apt-get install chromium)")
    return path


def sections(page: str) -> list[str]:
    return re.findall(r'<section id="([a-z]+)">', page)


@pytest.fixture(autouse=True)
def fixed_explanation(monkeypatch):
    """The report's sections are tested apart from the explanation's words (tests/report/test_text.py)."""
    monkeypatch.setattr("batchlab.report.html.explanation", lambda data, **_: "A fixed explanation.")


def fixed(results: StudyResults, analysis: object = None, **changes: object) -> StudyResults:
    """A copy of `results` whose analysis is given (None: a study without one)."""
    values = {f.name: getattr(results, f.name) for f in dataclasses.fields(results) if f.name != "_analyses"}
    return type("FixedWith", (StudyResults,), {"analysis": lambda self, **_: analysis})(**(values | changes))


def test_user_strings_are_escaped(hostile_study):
    page = write_report(StudyResults.load(hostile_study)).read_text()
    assert HOSTILE_TARGET not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the target column, in the setup and the config
    assert "&lt;img src=x onerror=alert(1)&gt;.csv" in page  # the dataset name
    assert len(re.findall(r"<script\b", page)) == len(re.findall(r"</script>", page))


def test_writes_study_dir_report_html_by_default_and_elsewhere_on_request(study, tmp_path):
    results = StudyResults.load(study)
    assert write_report(results) == study / "report.html"
    other = write_report(results, tmp_path / "sub" / "lena.html")
    assert other.read_text() == (study / "report.html").read_text()
    with pytest.raises(BatchlabError, match="out: got"):
        write_report(results, tmp_path)


def figures(page: str) -> list[dict]:
    """The JSON of every figure on the page."""
    return [json.loads(f) for f in re.findall(r"const f = (\{.*?\});\nPlotly.newPlot", page)]


def test_self_contained_with_plotly_js_inlined_once_and_no_webgl(study):
    page = write_report(StudyResults.load(study)).read_text()
    assert not re.search(r"<(script|link|img|iframe)[^>]*\b(src|href)=", page)  # nothing fetched
    assert page.count("plotly.js v") == 1  # the library's banner
    figs = figures(page)
    assert len(figs) == page.count('class="plot"') >= 8
    assert {t.get("type", "scatter") for f in figs for t in f["data"]} <= {"scatter", "bar"}


def test_sections_of_a_plain_study_and_no_optional_ones_without_their_data(study):
    results = StudyResults.load(study)
    bare = {run_id: {k: v for k, v in c.items() if not k.startswith(("b_simple", "grad_sq", "trace_sigma"))}
            for run_id, c in results.epochs.items()}
    page = render_report(fixed(results, None, epochs=bare))
    assert sections(page) == ["setup", "explanation", "runs", "grid", "lena", "overlay", "cost", "config"]
    assert "A fixed explanation." in page
    for s in results.summaries:
        assert f"<h3>{s.run_id}</h3>" in page and f"<td class=\"text\">{s.run_id}</td>" in page
    empty = SimpleNamespace(steps_to_target={}, fit=None, end_metrics={})
    assert sections(render_report(fixed(results, empty, epochs=bare))) == sections(page)


def test_optional_sections_render_from_their_data(study):
    results = StudyResults.load(study)
    sizes = sorted({s.batch_size for s in results.summaries})
    stt = {b: StepsToTarget(b, 100 // b + 5, (100 // b + 5) * b, 0.1, 0.03, 0, 2, 0) for b in sizes}
    fit = dataclasses.make_dataclass("Fit", ["s_min", "b_crit", "b_crit_low", "b_crit_high", "n"])(5.0, 20.0, 8.0,
                                                                                                    50.0, 3)
    run_id = results.summaries[0].run_id
    analysis = SimpleNamespace(target_metric="train_loss", target=0.5, steps_to_target=stt, fit=fit,
                               end_metrics={run_id: {"top_eigenvalue": 3.25, "hessian_trace": 17.5}})
    epochs = {k: dict(v) for k, v in results.epochs.items()}
    n = len(epochs[run_id]["epoch"])
    gns = np.full(n, np.nan)
    gns[[0, n - 1]] = [9.0, 31.0]
    epochs[run_id] |= {"b_simple": gns, "b_simple_low": gns * 0.8, "b_simple_high": gns * 1.25}
    page = render_report(fixed(results, analysis, epochs=epochs))
    assert sections(page) == ["setup", "explanation", "runs", "grid", "lena", "overlay", "cost", "gns", "scaling",
                              "end", "config"]
    assert '<td class="text">b_crit</td><td>20</td>' in page
    assert "3.25" in page and "17.5" in page and "top_eigenvalue" in page
    assert "Target: the first evaluation with train loss &lt; 0.5." in page  # strictly below, as steps_to_target


# ---------------------------------------------------------------------------------------------------------
# In a real browser.


@pytest.fixture(scope="module")
def page(study, chromium_path, tmp_path_factory):
    """The wine report, loaded once in headless Chromium."""
    path = write_report(StudyResults.load(study))
    with Chromium(chromium_path) as browser:
        browser.open(path)
        browser.wait_until("document.querySelectorAll('#plot-overlay .scatterlayer .trace').length > 0")
        yield browser


@pytest.mark.slow
def test_page_loads_with_no_console_errors_and_no_network(page, study):
    assert page.errors() == []
    assert page.requests() == [(study / "report.html").resolve().as_uri()]
    assert page.dialogs() == []


@pytest.mark.slow
def test_plots_render(page, study, tmp_path):
    html = (study / "report.html").read_text()
    n_divs = html.count('class="plot"')
    assert html.count('id="plot-lena-') == 6 and n_divs >= 6 + 2  # a Lena figure per run, overlay, cost, ...
    assert page.evaluate("document.querySelectorAll('.js-plotly-plot').length") == n_divs
    assert page.evaluate("document.querySelectorAll('svg.main-svg').length") >= n_divs
    drawn = page.evaluate("[...document.querySelectorAll('.js-plotly-plot')].map("
                          "d => d.querySelectorAll('.scatterlayer .trace path.js-line, .barlayer .point').length)")
    assert all(k > 0 for k in drawn), drawn
    shot = page.screenshot(tmp_path / "report.png")
    image = mpimg.imread(shot)[..., :3]
    assert image.shape[0] > 3000 and image.shape[1] >= 1300
    assert np.std(image) > 0.05  # not a blank page
    assert (image.std(axis=2) > 0.1).mean() > 0.005  # coloured pixels: the curves and bars


@pytest.mark.slow
def test_x_axis_switch_changes_data_and_title(page, study):
    results = StudyResults.load(study)
    gd = "document.getElementById('plot-overlay')"
    assert page.evaluate(f"{gd}.layout.xaxis.title.text") == "epoch"
    before = page.evaluate(f"Array.from({gd}.data[1].x)")
    assert before == list(range(9))
    box = page.evaluate(f"""(() => {{
        const b = [...{gd}.querySelectorAll('.updatemenu-button')].find(b => b.textContent.trim() === 'wall time');
        b.scrollIntoView({{block: 'center'}});
        const r = b.getBoundingClientRect();
        return [r.x + r.width / 2, r.y + r.height / 2];
    }})()""")
    page.click(*box)
    page.wait_until(f"{gd}.layout.xaxis.type === 'log'")
    assert "wall time" in page.evaluate(f"{gd}.layout.xaxis.title.text")
    assert "wall time" in page.evaluate(f"{gd}.querySelector('.g-xtitle').textContent")  # as drawn
    after = page.evaluate(f"Array.from({gd}.data[1].x)")
    runs = [s for s in results.summaries if s.batch_size == 1]
    expected = np.mean([results.epochs[s.run_id]["wall_time_s"] for s in runs], axis=0)[1:]
    assert np.allclose(after, expected)
    assert page.errors() == []


@pytest.mark.slow
def test_hostile_names_show_as_text_in_the_browser(hostile_study, chromium_path):
    path = write_report(StudyResults.load(hostile_study))
    with Chromium(chromium_path) as browser:
        browser.open(path)
        text = browser.evaluate("document.body.innerText")
        assert browser.dialogs() == [] and browser.errors() == []
        assert HOSTILE_TARGET in text and HOSTILE_FILE in text
        assert browser.evaluate("document.querySelectorAll('img').length") == 0
