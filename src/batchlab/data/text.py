"""Character-level text: a corpus cut into sequences of `context` characters with next-character targets.

The default corpus (`--dataset text`) is CPython's `pydoc_data.topics`, the help text of `help("topics")`, on
every Python install: its topics joined in sorted order of their names, separated by one newline (~465,000
characters, 103 distinct, on Python 3.11; other Python versions ship other text, so the corpus's SHA-256 is
recorded in the dataset summary). Any UTF-8 `.txt` file works the same way.

The split is contiguous: the first 90% of the characters train, the last 10% (TEST_FRACTION) are held out, so
no test sequence overlaps a training one. The vocabulary is the sorted distinct characters of the training text;
a held-out character never seen in training becomes one extra class, UNKNOWN. Each split is cut into
non-overlapping windows: sequence i holds characters [iT, iT + T) as features (their vocabulary indices, as
float32, exact below 2^24) and characters [iT + 1, iT + T + 1) as targets, T the context. The batch size then
counts sequences and an example is T tokens: tokens seen = examples seen x T. Token indices are never
standardized.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from batchlab.data.dataset import Dataset
from batchlab.errors import BatchlabError, invalid
from batchlab.spec import StudySpec

TEST_FRACTION = 0.1
"""The held-out tail: this fraction of the characters, at the end of the corpus."""
UNKNOWN = "<unk>"
"""The class of held-out characters absent from the training text (only present when there are some)."""


def default_corpus() -> str:
    """`pydoc_data.topics.topics` joined in sorted order of topic names, one newline between topics."""
    from pydoc_data.topics import topics

    return "\n".join(topics[name] for name in sorted(topics))


def read_corpus(path: str) -> str:
    """The text of a UTF-8 `.txt` file; one-line errors for a missing, unreadable, non-UTF-8 or empty file."""
    p = Path(path)
    if not p.is_file():
        raise invalid("dataset", path, "the path of an existing .txt file (UTF-8 text)")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise invalid("dataset", path, f"a readable .txt file ({e.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise invalid("dataset", path, f"UTF-8 text (byte {e.start:,} is not: {e.reason})") from None
    text = text.removeprefix("\ufeff")
    if not text:
        raise invalid("dataset", path, "a non-empty text file")
    return text


def load_text(spec: StudySpec) -> Dataset:
    """The corpus `spec.dataset` names as sequences of `spec.context` characters (see the module docstring)."""
    text = default_corpus() if spec.dataset == "text" else read_corpus(spec.dataset)
    return text_dataset(text, context=spec.context, name=spec.dataset)


def text_dataset(text: str, *, context: int, name: str = "text") -> Dataset:
    """Split, encode and window `text` (see the module docstring). Raises BatchlabError when either split is
    shorter than one sequence of `context` characters and its next character."""
    if len(text) < 2:
        raise invalid("dataset", name, "a text of at least 2 characters")
    n_test = max(1, round(len(text) * TEST_FRACTION))
    train_text, test_text = text[:-n_test], text[-n_test:]
    if len(train_text) < context + 1:
        raise invalid("context", context, f"at most {len(train_text) - 1:,} (the training text of {name} has "
                      f"{len(train_text):,} characters; a sequence needs context + 1)")
    if len(test_text) < context + 1:
        raise invalid("context", context, f"at most {len(test_text) - 1:,} (the held-out tail of {name}, the last "
                      f"{TEST_FRACTION:.0%}, has {len(test_text):,} characters; a sequence needs context + 1)")
    vocab = sorted(set(train_text))
    unseen = set(test_text) - set(vocab)
    classes = vocab + ([UNKNOWN] if unseen else [])
    index = {c: i for i, c in enumerate(vocab)}
    unknown = len(vocab)
    x_train, y_train = windows(np.array([index[c] for c in train_text], np.int32), context)
    x_test, y_test = windows(np.array([index.get(c, unknown) for c in test_text], np.int32), context)
    if len(classes) < 2:
        raise BatchlabError(f"dataset: {name} has only one distinct character ({classes[0]!r}); allowed: a text "
                            "with at least two")
    return Dataset(name, x_train, y_train, x_test, y_test, tuple(classes), tuple(f"pos{i}" for i in range(context)),
                   task="next_token", context=context,
                   corpus={"characters": len(text), "train_characters": len(train_text),
                           "test_characters": len(test_text), "unseen_test_characters": len(unseen),
                           "sha256": hashlib.sha256(text.encode()).hexdigest()})


def windows(ids: np.ndarray, context: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping sequences of `context` token ids (float32 features) and their next tokens (int32 targets):
    row i is ids[iT : iT + T] and ids[iT + 1 : iT + T + 1]; the leftover tail shorter than a sequence is dropped."""
    n = (len(ids) - 1) // context
    x = ids[:n * context].reshape(n, context).astype(np.float32)
    y = ids[1:n * context + 1].reshape(n, context).astype(np.int32)
    return x, y
