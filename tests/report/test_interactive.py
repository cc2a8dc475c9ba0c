"""The report's plotly figures: decimation is announced, the x-axis buttons carry the right data, options render."""

from __future__ import annotations

import dataclasses

import numpy as np

from batchlab.analysis.runs import RunSummary
from batchlab.analysis.scaling import StepsToTarget
from batchlab.report import interactive


def summary(run_id: str = "r", *, batch_size: int = 1, seed: int = 0, updates_per_epoch: int = 1000,
            epochs: int = 100) -> RunSummary:
    return RunSummary(run_id, batch_size, 0.03, seed, "completed", None, updates_per_epoch, epochs,
                      updates_per_epoch * epochs, batch_size * updates_per_epoch * epochs, 2.0, 0.5, 2.3, 0.1, 0.9,
                      0.2, 0.8, 0.15, 10, 0.01, 0.01, 0.5)


def curves(epochs: int, updates_per_epoch: int, *, batch_size: int, scale: float = 1.0) -> dict[str, np.ndarray]:
    e = np.arange(epochs + 1)
    return {"epoch": e, "updates": e * updates_per_epoch, "examples_seen": e * updates_per_epoch * batch_size,
            "wall_time_s": e * 0.02 * scale, "train_loss": 2.3 * np.exp(-e / 30) * scale,
            "test_loss": 2.4 * np.exp(-e / 40) * scale, "train_acc": np.full(e.shape, 0.5),
            "test_acc": np.full(e.shape, 0.5)}


def test_step_positions_put_each_loss_before_its_update():
    # 3 updates per epoch, 2 epochs: losses measured at 0, 1/3, 2/3, then 1, 4/3, 5/3 epochs of training
    x = interactive.step_positions(np.array([1, 1, 1, 2, 2, 2]), 3)
    assert np.allclose(x, [0, 1 / 3, 2 / 3, 1, 4 / 3, 5 / 3])


def test_lena_figure_decimates_long_step_curves_and_says_so():
    s = summary()
    n = 100_000
    steps = (np.repeat(np.arange(1, 101), 1000), np.random.default_rng(0).lognormal(size=n).astype(np.float32))
    fig = interactive.lena_figure(s, curves(100, 1000, batch_size=1), steps, n_train=1000)
    step_trace = next(t for t in fig.data if t.name and t.name.startswith("minibatch loss"))
    assert len(step_trace.x) <= 4000
    assert "min/max-decimated" in step_trace.name and f"{n:,} steps" in step_trace.name
    assert "min/max-decimated" in fig.layout.annotations[1].text  # the panel's title
    assert max(step_trace.y) == float(steps[1].max())  # the highest spike survives


def test_lena_figure_short_curves_are_raw():
    s = summary(updates_per_epoch=10)
    steps = (np.repeat(np.arange(1, 101), 10), np.linspace(2, 0.1, 1000))
    fig = interactive.lena_figure(s, curves(100, 10, batch_size=100), steps, n_train=1000)
    step_trace = next(t for t in fig.data if t.name and t.name.startswith("minibatch loss"))
    assert len(step_trace.x) == 1000 and "(raw)" in step_trace.name
    assert not any("decimated" in (t.name or "") for t in fig.data)


def test_overlay_buttons_switch_x_data_and_axis_title():
    runs = [summary("a0", seed=0, epochs=20), summary("a1", seed=1, epochs=20),
            summary("b0", batch_size=100, updates_per_epoch=10, epochs=20)]
    data = {"a0": curves(20, 1000, batch_size=1), "a1": curves(20, 1000, batch_size=1, scale=1.1),
            "b0": curves(20, 10, batch_size=100)}
    fig = interactive.overlay_figure(runs, data, n_train=1000)
    buttons = {b.label: b for b in fig.layout.updatemenus[0].buttons}
    assert list(buttons) == ["epoch", "step", "examples seen", "wall time"]
    wall = buttons["wall time"].args
    assert wall[1]["xaxis.type"] == "log" and "wall time" in wall[1]["xaxis.title.text"]
    # traces: B=1 (2 seeds) train band, train mean, test band, test mean; B=100 train mean, test mean
    assert len(fig.data) == 6 == len(wall[0]["x"])
    mean_wall = (data["a0"]["wall_time_s"] + data["a1"]["wall_time_s"]) / 2
    assert np.allclose(wall[0]["x"][1], mean_wall[1:])  # epoch 0 (t = 0) left out on the log axis
    assert np.allclose(buttons["epoch"].args[0]["x"][1], np.arange(21))
    assert np.allclose(buttons["step"].args[0]["x"][5], np.arange(1, 21) * 10)
    band_y = np.array(wall[0]["y"][0])  # upper edge forwards, then lower edge backwards
    mean_train = (data["a0"]["train_loss"] + data["a1"]["train_loss"]) / 2
    std_train = np.abs(data["a0"]["train_loss"] - data["a1"]["train_loss"]) / 2
    assert np.allclose(band_y[:20], (mean_train + std_train)[1:])
    assert np.allclose(band_y[20:], (mean_train - std_train)[1:][::-1])


def test_gns_figure_only_when_measured_and_b_crit_beside_it():
    runs = [summary("a"), summary("b", batch_size=100, updates_per_epoch=10)]
    data = {"a": curves(10, 1000, batch_size=1), "b": curves(10, 10, batch_size=100)}
    assert interactive.gns_figure(runs, data, n_train=1000) is None
    nan = np.full(11, np.nan)
    data["a"] |= {"b_simple": nan.copy(), "b_simple_low": nan.copy(), "b_simple_high": nan.copy()}
    assert interactive.gns_figure(runs, data, n_train=1000) is None  # all NaN: not measured
    data["a"]["b_simple"][[0, 10]] = [8.0, 200.0]
    data["a"]["b_simple_low"][[0, 10]] = [6.0, 150.0]
    data["a"]["b_simple_high"][[0, 10]] = [11.0, 260.0]
    fig = interactive.gns_figure(runs, data, n_train=1000, b_crit=(40.0, 10.0, 160.0))
    measured = fig.data[0]
    assert list(measured.x) == [0, 10] and list(measured.y) == [8.0, 200.0]
    assert list(measured.error_y.array) == [3.0, 60.0] and list(measured.error_y.arrayminus) == [2.0, 50.0]
    assert any("B_crit from the S(B) fit: 40" in t.name for t in fig.data)


def test_steps_to_target_figure_draws_the_fit_and_names_what_was_not_reached():
    stt = {b: StepsToTarget(b, s, s * b, 0.01 * s, 0.1, 0, 2, 0) for b, s in ((1, 1000), (4, 260), (16, 80))}
    stt[64] = StepsToTarget(64, None, None, float("nan"), None, None, 2, 0)
    fit = dataclasses.make_dataclass("Fit", ["s_min", "b_crit", "b_crit_low", "b_crit_high"])(50.0, 20.0, 5.0, 80.0)
    fig = interactive.steps_to_target_figure(stt, fit)
    measured, curve = fig.data[0], fig.data[1]
    assert list(measured.x) == [1, 4, 16] and list(measured.y) == [1000, 260, 80]
    assert np.allclose(curve.y, 50.0 * (1 + 20.0 / np.asarray(curve.x)))
    assert "not reached at batch size 64" in fig.layout.title.text
    assert interactive.steps_to_target_figure({64: stt[64]}) is None
