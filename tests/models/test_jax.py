"""Built-in models against independent computations: the CNN against a NumPy convolution, parameter names and
initial scales, and the CNN trained on digits as 8x8 images."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from batchlab.data.load import load_dataset
from batchlab.errors import BatchlabError
from batchlab.models.jax import make_model
from batchlab.models.params import flatten_params, unflatten_params
from batchlab.models.registry import load_model
from batchlab.runner.driver import run_study
from batchlab.spec import StudySpec, build_spec
from batchlab.store.db import Store
from batchlab.train.device import model_replica_bytes, replica_bytes


def numpy_conv_same(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int) -> np.ndarray:
    """A 3x3 convolution (cross-correlation, as in deep learning) with zero padding of one pixel each side (what
    XLA's "SAME" padding is for a 3x3 kernel at stride 1, and at stride 2 on an even size): out[i, j, o] =
    b[o] + sum_{di, dj, c} xpad[s i + di, s j + dj, c] w[di, dj, c, o], written as explicit loops."""
    h, wd, _ = x.shape
    out_h, out_w = -(-h // stride), -(-wd // stride)
    pad_total_h = max((out_h - 1) * stride + 3 - h, 0)
    pad_total_w = max((out_w - 1) * stride + 3 - wd, 0)
    top, left = pad_total_h // 2, pad_total_w // 2
    xpad = np.zeros((h + pad_total_h, wd + pad_total_w, x.shape[2]))
    xpad[top:top + h, left:left + wd] = x
    out = np.zeros((out_h, out_w, w.shape[3]))
    for i in range(out_h):
        for j in range(out_w):
            patch = xpad[stride * i:stride * i + 3, stride * j:stride * j + 3]
            out[i, j] = np.einsum("abc,abco->o", patch, w) + b
    return out


def numpy_cnn(params: dict, x: np.ndarray, image_shape: tuple[int, int, int]) -> np.ndarray:
    p = {k: np.asarray(v, np.float64) for k, v in flatten_params(params).items()}
    logits = []
    for row in x.astype(np.float64):
        z = row.reshape(image_shape)
        z = np.maximum(numpy_conv_same(z, p["layer00/w"], p["layer00/b"], 1), 0)
        z = np.maximum(numpy_conv_same(z, p["layer01/w"], p["layer01/b"], 2), 0)
        logits.append(z.reshape(-1) @ p["layer02/w"] + p["layer02/b"])
    return np.array(logits)


@pytest.mark.parametrize("image_shape", [(8, 8, 1), (5, 6, 2)])
def test_cnn_logits_equal_a_numpy_convolution(image_shape):
    """Odd sizes too: 5x6 at stride 2 pads unevenly (XLA puts the extra row at the bottom)."""
    n_features = int(np.prod(image_shape))
    model = make_model("cnn", n_features=n_features, n_classes=3, image_shape=image_shape)
    params = model.init(jax.random.PRNGKey(1))
    x = np.random.default_rng(0).normal(size=(4, n_features)).astype(np.float32)
    logits = np.asarray(jax.jit(model.apply)(params, x))
    np.testing.assert_allclose(logits, numpy_cnn(params, x, image_shape), rtol=1e-4, atol=1e-5)


def test_cnn_initial_weights_follow_pytorchs_default_bounds():
    model = make_model("cnn", n_features=64, n_classes=10, image_shape=(8, 8, 1))
    flat = flatten_params(model.init(jax.random.PRNGKey(0)))
    assert {k: v.shape for k, v in flat.items()} == {
        "layer00/b": (8,), "layer00/w": (3, 3, 1, 8), "layer01/b": (16,), "layer01/w": (3, 3, 8, 16),
        "layer02/b": (10,), "layer02/w": (256, 10)}
    for layer, fan_in in (("layer00", 9), ("layer01", 72), ("layer02", 256)):
        for k in ("w", "b"):
            values = flat[f"{layer}/{k}"]
            assert np.abs(values).max() <= 1 / np.sqrt(fan_in)
            assert np.abs(values).max() > 0.8 / np.sqrt(fan_in)  # spread over the range, not collapsed at zero


def test_cnn_image_shape_must_match_the_features():
    with pytest.raises(BatchlabError, match=r"image_shape: got '7,7,1'; allowed: a shape with height x width x "
                                            r"channels = 64"):
        make_model("cnn", n_features=64, n_classes=10, image_shape=(7, 7, 1))
    spec = StudySpec(dataset="iris", model="cnn")
    with pytest.raises(BatchlabError, match="image_shape: got None"):
        load_model(spec, load_dataset(spec))


def test_image_shape_is_validated_at_the_door():
    assert build_spec({"model": "cnn", "image_shape": "8,8"}).image_shape == (8, 8, 1)
    assert build_spec({"model": "cnn", "image_shape": [4, 4, 4]}).image_shape == (4, 4, 4)
    for bad in ("8", "8,8,1,1", "0,8", "a,b"):
        with pytest.raises(BatchlabError, match="image_shape: got .*allowed: height,width"):
            build_spec({"model": "cnn", "image_shape": bad})
    with pytest.raises(BatchlabError, match="image_shape: got '8,8,1'; allowed: only with model cnn"):
        build_spec({"model": "mlp", "image_shape": "8,8"})


def test_model_references_are_validated_at_the_door():
    for good in ("cnn", "pkg.mod:make", "models/net.py:build_net", "torch:net.py:make", "torch:pkg.mod:make"):
        assert build_spec({"model": good}).model == good
    for bad in ("cnnn", "net.py", "net.py:", ":make", "net.py:1make", "torch:make", "torch:"):
        with pytest.raises(BatchlabError, match=r"model: got .*allowed: mlp, logreg, cnn, transformer, or a user model"):
            build_spec({"model": bad})


def test_flatten_params_keeps_the_builtin_key_format_and_names_any_pytree():
    params = make_model("mlp", n_features=3, n_classes=2, hidden=(4, 5)).init(jax.random.PRNGKey(0))
    flat = flatten_params(params)
    assert list(flat) == ["layer00/b", "layer00/w", "layer01/b", "layer01/w", "layer02/b", "layer02/w"]
    back = unflatten_params(flat)
    assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(params)
    tree = {"encoder": [{"kernel": np.ones((2, 3))}, {"kernel": np.zeros(3)}], "scale": np.float32(2.0)}
    flat = flatten_params(tree)
    assert list(flat) == ["encoder/0/kernel", "encoder/1/kernel", "scale"]
    again = unflatten_params(flat, like=tree)
    assert isinstance(again["encoder"], list)
    np.testing.assert_array_equal(again["encoder"][0]["kernel"], tree["encoder"][0]["kernel"])


def test_memory_estimate_is_unchanged_for_the_mlp_and_counts_the_cnns_parameters_and_activations():
    mlp = make_model("mlp", n_features=64, n_classes=10)
    sizes = {"n_train": 1437, "n_test": 360, "batch_size": 32}
    assert model_replica_bytes(mlp, n_features=64, **sizes) == replica_bytes(mlp.layer_sizes, **sizes)
    cnn = make_model("cnn", n_features=64, n_classes=10, image_shape=(8, 8, 1))
    n_params, per_example = cnn.footprint(64)
    assert n_params == (9 * 8 + 8) + (72 * 16 + 16) + (256 * 10 + 10)
    assert per_example >= 8 * 8 * 8 + 4 * 4 * 16 + 10  # at least the layers' outputs
    assert model_replica_bytes(cnn, n_features=64, **sizes) > 4 * 3 * 32 * per_example


def test_load_model_uses_the_datasets_image_shape_for_the_cnn():
    spec = build_spec({"dataset": "digits", "model": "cnn"})
    model = load_model(spec, load_dataset(spec))
    assert repr(model) == "Model('cnn', 8x8x1 -> conv3x3x8 -> conv3x3x16/2 -> 10, activation='relu')"


def test_cnn_trains_on_digits_and_beats_chance(tmp_path):
    spec = build_spec({"dataset": "digits", "model": "cnn", "batch_sizes": "32,full", "epochs": 4, "lr": 0.05, "gns": "off",
                       "sharpness": False, "device": "cpu"})
    run_study(spec, tmp_path / "cnn")
    store = Store.open(tmp_path / "cnn")
    assert "conv3x3x8" in store.meta()["model"]
    accuracy = {r["batch_size"]: store.epochs(r["run_id"])["test_acc"] for r in store.runs()}
    assert accuracy[32][-1] > 0.8  # chance is 0.1 (ten balanced classes)
    assert accuracy[32][-1] > accuracy[32][0] + 0.5
    assert list(store.load_params(store.runs()[0]["run_id"])) == ["layer00/b", "layer00/w", "layer01/b",
                                                                   "layer01/w", "layer02/b", "layer02/w"]


def test_the_cnn_reshapes_rows_so_the_engine_gathers_rows_as_before():
    """Applying to a batch of rows equals applying row by row (the reshape keeps examples apart)."""
    model = make_model("cnn", n_features=12, n_classes=2, image_shape=(3, 4, 1))
    params = model.init(jax.random.PRNGKey(3))
    x = np.random.default_rng(1).normal(size=(5, 12)).astype(np.float32)
    batch = np.asarray(model.apply(params, x))
    rows = np.concatenate([np.asarray(model.apply(params, x[i:i + 1])) for i in range(5)])
    np.testing.assert_allclose(batch, rows, rtol=1e-6)


def test_cnn1d_equals_pytorchs_conv1d_network():
    """The MNIST-1D paper's ConvBase (mnist1d repository): Conv1d(1, 25, 5, 2, 1), Conv1d(25, 25, 3, 2, 1) twice,
    ReLU after each, Linear(125, 10) on the (N, C, W) activations flattened; our weights loaded into it."""
    torch = pytest.importorskip("torch")
    model = make_model("cnn", n_features=40, n_classes=10, image_shape=(40,))
    params = model.init(jax.random.PRNGKey(3))
    flat = {k: np.asarray(v) for k, v in flatten_params(params).items()}
    assert model.footprint(40)[0] == 150 + 1900 + 1900 + 1260  # the paper's CNN: 5,210 parameters
    convs = [torch.nn.Conv1d(1, 25, 5, 2, 1), torch.nn.Conv1d(25, 25, 3, 2, 1), torch.nn.Conv1d(25, 25, 3, 2, 1)]
    linear = torch.nn.Linear(125, 10)
    with torch.no_grad():
        for i, conv in enumerate(convs):  # ours (kernel, in, out) -> PyTorch's (out, in, kernel)
            conv.weight.copy_(torch.from_numpy(flat[f"layer{i:02d}/w"].transpose(2, 1, 0).copy()))
            conv.bias.copy_(torch.tensor(np.array(flat[f"layer{i:02d}/b"])))
        linear.weight.copy_(torch.from_numpy(flat["layer03/w"].T.copy()))
        linear.bias.copy_(torch.tensor(np.array(flat["layer03/b"])))
        x = np.random.default_rng(0).normal(size=(6, 40)).astype(np.float32)
        h = torch.from_numpy(x).view(-1, 1, 40)
        for conv in convs:
            h = conv(h).relu()
        expected = linear(h.view(h.shape[0], -1)).numpy()
    np.testing.assert_allclose(np.asarray(jax.jit(model.apply)(params, x)), expected, rtol=1e-4, atol=1e-5)


def test_load_model_builds_the_1d_cnn_for_mnist1d(tmp_path, monkeypatch):
    monkeypatch.setenv("BATCHLAB_CACHE_DIR", str(tmp_path))
    spec = build_spec({"dataset": "mnist1d", "model": "cnn"})
    model = load_model(spec, load_dataset(spec))
    assert repr(model) == ("Model('cnn', 40 -> conv5/2x25 -> conv3/2x25 -> conv3/2x25 -> 10, "
                           "activation='relu')")
