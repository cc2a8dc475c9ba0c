"""Sharpness during training in the store: its own table, read back as per-epoch fields (NaN where not measured,
and for studies written before the table existed)."""

from __future__ import annotations

import dataclasses
import sqlite3

import numpy as np

from batchlab.store.db import SHARPNESS_FIELDS, Store
from tests.store.test_db import make_store, row


def test_sharpness_rows_round_trip_and_old_studies_read_nan(tmp_path):
    store = make_store(tmp_path)
    store.write_epoch([dataclasses.replace(row("r1", 0, []), sharpness=(5.0, 30.0, np.nan)), row("r2", 0, [])])
    store.write_epoch([row("r1", 1, [1.0, 0.5, 0.2]), row("r2", 1, [1.0, 0.5, 0.2])])
    store.write_epoch([dataclasses.replace(row("r1", 2, [0.1, 0.1, 0.1]), sharpness=(7.5, 40.0, 6.0)),
                       row("r2", 2, [0.1, 0.1, 0.1])])
    store.close()
    e = Store.open(tmp_path / "s").epochs("r1")
    np.testing.assert_array_equal(e["hessian_top_eigenvalue"], [5.0, np.nan, 7.5])
    np.testing.assert_array_equal(e["hessian_trace"], [30.0, np.nan, 40.0])
    np.testing.assert_array_equal(e["batch_sharpness"], [np.nan, np.nan, 6.0])
    assert np.isnan(Store.open(tmp_path / "s").epochs("r2")["hessian_top_eigenvalue"]).all()

    con = sqlite3.connect(tmp_path / "s" / "study.db")
    con.execute("DROP TABLE sharpness")
    con.commit()
    con.close()
    old = Store.open(tmp_path / "s").epochs("r1")
    assert all(np.isnan(old[f]).all() and len(old[f]) == 3 for f in SHARPNESS_FIELDS)
