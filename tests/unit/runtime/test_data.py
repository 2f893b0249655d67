"""Data loading: built-in sets, synthetic data, volumes, and the record-count check."""

from __future__ import annotations

import numpy as np
import pytest

from ppml_runtime.contract import BUILTIN_DATASET_SHAPES, BUILTIN_DATASET_SIZES, DataConfig
from ppml_runtime.training.data import build_dataset, load_builtin
from ppml_runtime.training.errors import DataMismatchError, InvalidConfigError


@pytest.mark.parametrize("name", sorted(BUILTIN_DATASET_SIZES))
def test_builtin_sets_ship_in_packages_with_the_declared_shape(name):
    records = load_builtin(name)
    features, classes = BUILTIN_DATASET_SHAPES[name]
    assert records.features.shape == (BUILTIN_DATASET_SIZES[name], features)
    assert records.features.dtype == np.float32
    assert sorted(set(records.labels.tolist())) == list(range(classes))
    assert np.isfinite(records.features).all()


def test_image_sets_are_scaled_to_unit_range_without_looking_at_the_data():
    for name in ("Digits", "Mnist5k"):
        records = load_builtin(name)
        assert records.features.min() >= 0.0 and records.features.max() <= 1.0
        assert records.image_shape is not None


def digits(records: int = 1437, **extra) -> DataConfig:
    return DataConfig.model_validate(
        {"source": "Builtin", "builtin": {"name": "Digits"}, "numRecords": records, **extra}
    )


def test_split_is_deterministic_and_disjoint():
    a, b = build_dataset(digits()), build_dataset(digits())
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_test, b.y_test)
    other = build_dataset(digits(splitSeed=7))
    assert not np.array_equal(a.y_train, other.y_train)
    assert a.x_train.shape[0] + a.x_test.shape[0] == 1797
    rows_train = {row.tobytes() for row in a.x_train}
    overlap = sum(row.tobytes() in rows_train for row in a.x_test)
    # digits holds a few duplicate images; a split that mixed up indices would overlap wholesale
    assert overlap < 10


@pytest.mark.parametrize(
    ("declared", "fraction"),
    [
        pytest.param(1797, "0.2", id="whole set declared instead of the training split"),
        pytest.param(1437, "0.25", id="test fraction changed"),
        pytest.param(1000, "0.2", id="simply wrong"),
    ],
)
def test_record_count_mismatch_is_refused(declared, fraction):
    with pytest.raises(DataMismatchError, match=f"numRecords is {declared}"):
        build_dataset(digits(declared, testFraction=fraction))


def test_synthetic_training_split_has_the_declared_size():
    config = DataConfig.model_validate(
        {
            "source": "Synthetic",
            "synthetic": {"numFeatures": 5, "numClasses": 3, "seed": 4},
            "numRecords": 333,
            "testFraction": "0.3",
        }
    )
    split = build_dataset(config)
    assert split.x_train.shape == (333, 5)
    assert split.num_classes == 3
    assert np.array_equal(build_dataset(config).x_train, split.x_train)


def _write(fmt: str, path, x: np.ndarray, y: np.ndarray) -> None:
    if fmt == "Csv":
        header = ",".join([f"f{i}" for i in range(x.shape[1])] + ["target"])
        np.savetxt(path, np.column_stack([x, y]), delimiter=",", header=header, comments="")
    elif fmt == "Npz":
        np.savez(path, pixels=x, target=y)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = {f"f{i}": x[:, i] for i in range(x.shape[1])} | {"target": y}
        pq.write_table(pa.table(columns), path)


@pytest.mark.parametrize("fmt", ["Csv", "Npz", "Parquet"])
def test_volume_formats_load_features_and_label_column(tmp_path, fmt):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3)).round(4)
    y = rng.integers(0, 4, size=50)
    path = tmp_path / f"data.{fmt.lower()}"
    _write(fmt, path, x, y)
    config = DataConfig.model_validate(
        {
            "source": "Volume",
            "volume": {"path": str(path), "format": fmt, "labelColumn": "target"},
            "numRecords": 40,
        }
    )
    split = build_dataset(config)
    assert split.x_train.shape == (40, 3)
    both = np.concatenate([split.x_train, split.x_test])
    assert sorted(map(tuple, both.round(4).tolist())) == sorted(
        map(tuple, x.astype(np.float32).round(4).tolist())
    )
    assert split.num_classes == int(y.max()) + 1


@pytest.mark.parametrize(
    ("volume", "message"),
    [
        pytest.param(
            {"path": "/nonexistent.csv", "format": "Csv"}, "is not a file", id="missing file"
        ),
        pytest.param(
            {"format": "Csv", "labelColumn": "nope"}, "labelColumn 'nope'", id="missing label"
        ),
    ],
)
def test_volume_errors_name_the_field(tmp_path, volume, message):
    path = tmp_path / "data.csv"
    _write("Csv", path, np.zeros((10, 2)), np.zeros(10))
    config = DataConfig.model_validate(
        {"source": "Volume", "volume": {"path": str(path)} | volume, "numRecords": 8}
    )
    with pytest.raises(InvalidConfigError, match=message):
        build_dataset(config)
