"""The text dataset (issue 13): contiguous split, training vocabulary, non-overlapping windows with next-character
targets, the default corpus, and one-line refusals of bad corpora."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from batchlab.data.load import load_dataset
from batchlab.data.text import TEST_FRACTION, UNKNOWN, default_corpus, text_dataset, windows
from batchlab.errors import BatchlabError
from batchlab.spec import build_spec


def test_windows_are_consecutive_characters_and_their_successors():
    ids = np.arange(11, dtype=np.int32)
    x, y = windows(ids, 3)
    np.testing.assert_array_equal(x, [[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    np.testing.assert_array_equal(y, [[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    assert x.dtype == np.float32 and y.dtype == np.int32


def test_text_dataset_by_hand():
    text = "abc" * 36 + "abXY"  # 112 characters: the last 11 (10%, rounded), "cabcabcabXY", are held out
    data = text_dataset(text, context=4, name="t")
    assert data.class_names == ("a", "b", "c", UNKNOWN)  # X, Y never occur in training: one unknown class
    assert data.task == "next_token" and data.context == data.n_features == 4 and data.tokens_per_example == 4
    # training text: the first 101 characters, (101 - 1) // 4 = 25 windows; the tail: (11 - 1) // 4 = 2
    np.testing.assert_array_equal(data.x_train[0], [0, 1, 2, 0])
    np.testing.assert_array_equal(data.y_train[0], [1, 2, 0, 1])
    assert data.n_train == 25 and len(data.y_test) == 2
    np.testing.assert_array_equal(data.x_test, [[2, 0, 1, 2], [0, 1, 2, 0]])  # "cabc", "abca"
    np.testing.assert_array_equal(data.y_test, [[0, 1, 2, 0], [1, 2, 0, 1]])
    assert data.summary()["corpus"]["unseen_test_characters"] == 2


def test_held_out_tail_is_contiguous_and_ten_percent():
    text = "".join(chr(ord("a") + i % 26) for i in range(1000))
    data = text_dataset(text, context=10)
    decoded = "".join(data.class_names[int(i)] for i in data.x_test.ravel())
    assert text[-round(len(text) * TEST_FRACTION):].startswith(decoded)
    assert UNKNOWN not in data.class_names


def test_default_corpus_is_pydoc_topics_in_sorted_order():
    from pydoc_data.topics import topics

    text = default_corpus()
    first = min(topics)
    assert text.startswith(topics[first]) and len(text) == sum(map(len, topics.values())) + len(topics) - 1
    data = load_dataset(build_spec({"dataset": "text", "model": "transformer", "context": 64}))
    assert data.n_train == (len(text) - round(len(text) * 0.1) - 1) // 64
    assert data.summary()["corpus"]["sha256"] == hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize(("content", "field", "words"), [
    (b"", "dataset", "a non-empty text file"),
    (b"\xff\xfe\x00abc", "dataset", "UTF-8 text"),
    (b"short text", "context", "at most 8 (the training text"),
    (("x" * 500).encode(), "context", "the held-out tail"),
])
def test_bad_corpus_is_one_line(tmp_path, content, field, words):
    path = tmp_path / "corpus.txt"
    path.write_bytes(content)
    spec = build_spec({"dataset": str(path), "model": "transformer", "context": 64})
    with pytest.raises(BatchlabError) as e:
        load_dataset(spec)
    message = str(e.value)
    assert message.startswith(f"{field}: ") and words in message and "\n" not in message


def test_bad_corpus_writes_nothing(tmp_path):
    from batchlab.cli import main

    empty = tmp_path / "empty.txt"
    empty.write_text("")
    out = tmp_path / "study"
    assert main(["run", "--dataset", str(empty), "--model", "transformer", "--out", str(out)]) == 2
    assert not out.exists()


def test_text_needs_a_sequence_model():
    with pytest.raises(BatchlabError, match="^model: got 'mlp'; allowed: transformer"):
        build_spec({"dataset": "text"})
    with pytest.raises(BatchlabError, match="^model: got 'transformer'; .*needs dataset text"):
        build_spec({"model": "transformer"})
    with pytest.raises(BatchlabError, match="^heads: got 3; allowed: a divisor of width 64"):
        build_spec({"dataset": "text", "model": "transformer", "heads": 3})
    with pytest.raises(BatchlabError, match="^budget_tokens: got 100; allowed: only with dataset text"):
        build_spec({"budget_tokens": 100})


def test_token_budget_is_whole_sequences_then_whole_epochs():
    spec = build_spec({"dataset": "text", "model": "transformer", "context": 64, "budget_tokens": 1_000_000})
    assert spec.budget_examples_from_tokens == 15_625  # ceil(1e6 / 64)
    assert spec.epochs_for(32, 6539) == 3  # ceil(15,625 / 6,539)
