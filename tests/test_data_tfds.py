"""The tensorflow-datasets path of jaxmlp.data, against real tensorflow-datasets.

``tensorflow``-marked tests build tfds datasets offline from the official files (needs
TensorFlow) and skip without it, or fail when ``JAXMLP_REQUIRE_TENSORFLOW=1``. They also need
the real files (``data`` marker, ``JAXMLP_REQUIRE_DATA=1``).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from test_data import NAMES, PINNED, _official_gz_root, _real_root, _required, _sha

from jaxmlp import data

# Preparing takes about a minute; under pytest-xdist with --dist loadgroup it happens once.
pytestmark = pytest.mark.xdist_group("tfds")


def _multiset_order(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Row order sorting (image bytes, label): equal multisets sort to equal arrays."""
    rows = np.concatenate(
        [images.reshape(len(images), -1), labels.reshape(-1, 1).astype(np.uint8)], axis=1
    )
    keys = np.ascontiguousarray(rows).view(np.dtype((np.void, rows.shape[1]))).ravel()
    return np.argsort(keys, kind="stable")


def _sorted_rows(split: data.Split) -> tuple[np.ndarray, np.ndarray]:
    order = _multiset_order(split.images, split.labels)
    return split.images[order], split.labels[order]


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    """A tfds data dir with mnist and fashion_mnist prepared offline from the official files."""
    if importlib.util.find_spec("tensorflow") is None:
        msg = "TensorFlow is not installed (pip install jaxmlp[tfds-prepare])"
        if _required("JAXMLP_REQUIRE_TENSORFLOW"):
            pytest.fail(msg + " (JAXMLP_REQUIRE_TENSORFLOW=1)")
        pytest.skip(msg)
    # tfds checks the official archives' own checksums.
    roots = {name: _official_gz_root(name) for name in NAMES}
    out = tmp_path_factory.mktemp("tfds")
    for name in NAMES:
        data.prepare_tfds(name, manual_dir=roots[name], data_dir=out)
    return out


@pytest.mark.data
@pytest.mark.tensorflow
@pytest.mark.parametrize("name", NAMES)
def test_tfds_equals_idx_as_multisets(tfds_dir, name):
    kw = dict(normalize=None, dtype=np.uint8, flatten=False)
    via_tfds = data.load(name, source="tfds", data_dir=tfds_dir, **kw)
    via_idx = data.load(name, source="idx", data_dir=_real_root(name).parent, **kw)
    assert via_tfds.source.startswith("tfds:")
    for split in ("train", "test"):
        a, b = getattr(via_tfds, split), getattr(via_idx, split)
        assert a.images.shape == b.images.shape and a.labels.dtype == np.int32
        ai, al = _sorted_rows(a)
        bi, bl = _sorted_rows(b)
        np.testing.assert_array_equal(ai, bi)
        np.testing.assert_array_equal(al, bl)
    # tfds stores examples shuffled: same content, not the official order.
    assert _sha(via_tfds.train.images) != PINNED[name]["train_images"]


_HIDE_TF = """
import sys

class _HideTensorFlow:
    # Makes TensorFlow look uninstalled, as importlib.util.find_spec sees it.
    def __init__(self, finder):
        self._finder = finder

    def __getattr__(self, attr):
        return getattr(self._finder, attr)

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "tensorflow":
            return None
        return self._finder.find_spec(name, path, target)

sys.meta_path[:] = [_HideTensorFlow(f) for f in sys.meta_path]
"""


@pytest.mark.data
@pytest.mark.tensorflow
def test_reading_prepared_tfds_needs_no_tensorflow(tfds_dir):
    code = _HIDE_TF + textwrap.dedent(
        f"""
        import numpy as np
        from jaxmlp import data
        ds = data.load("fashion_mnist", source="tfds", data_dir={str(tfds_dir)!r},
                       normalize=None, dtype=np.uint8)
        assert "tensorflow" not in sys.modules, "TensorFlow was imported"
        print(len(ds.train), len(ds.test), np.bincount(ds.test.labels).tolist())
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=os.environ
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split("\n")[-2] == f"60000 10000 {[1000] * 10}"


def test_tfds_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=7):
        ds = data.load("fashion_mnist", source="tfds", normalize="symmetric", validation=2)
    assert ds.train.images.shape == (5, 784) and ds.validation.images.shape == (2, 784)
    assert ds.test.labels.dtype == np.int32 and ds.test.images.dtype == np.float32
    assert ds.train.images.min() >= -1 and ds.train.images.max() <= 1
    assert ds.class_names[0] == "t-shirt" and ds.source.startswith("tfds:")


def test_tfds_not_prepared_is_a_clear_error(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(data.DataNotFoundError, match=r"(?s)not prepared in .*prepare_tfds"):
        data.load("mnist", source="tfds", data_dir=tmp_path)
