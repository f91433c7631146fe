"""The shipped digits split file is exactly what scikit-learn gives, and reading it needs no scikit-learn."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from compress.data.digits import read_split_file, split_from_sklearn


def test_the_shipped_split_equals_the_scikit_learn_split():
    shipped, derived = read_split_file(), split_from_sklearn()
    assert set(shipped) == set(derived) == {"pixels", "labels", "train_idx", "test_idx"}
    for name in derived:
        assert shipped[name].dtype == derived[name].dtype
        np.testing.assert_array_equal(shipped[name], derived[name])
    assert len(shipped["train_idx"]) == 1437 and len(shipped["test_idx"]) == 360
    assert not set(shipped["train_idx"]) & set(shipped["test_idx"])


def test_loading_digits_does_not_import_scikit_learn():
    code = "import sys; from compress.data.digits import load_split; load_split('test'); print('sklearn' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
