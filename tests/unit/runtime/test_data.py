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
        np.savez(path, x=x, y=y)
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
            "volume": {"path": str(path), "format": fmt}
            | ({} if fmt == "Npz" else {"labelColumn": "target"}),
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


def test_an_npz_written_as_the_api_reference_says_trains_through_the_operators_config(tmp_path):
    """Issue 13: the API reference said Npz holds arrays x and y; the runtime wanted 'label'.

    The file is written exactly as the field's description says, the job goes through the
    operator's model and its rendering of the runtime config, and the runtime loads it.
    """
    from ppml_operator.api.v1alpha1 import PrivateTrainingJob
    from ppml_operator.api.v1alpha1.common import VolumeData as ApiVolume
    from ppml_operator.render.trainer import DATA_MOUNT, data_config

    described = ApiVolume.model_fields["format"].description or ""
    assert "np.savez(path, x=features, y=labels)" in described
    rng = np.random.default_rng(3)
    features = rng.random((60, 4, 4)).astype(np.float32)  # images: axes after the first flatten
    labels = rng.integers(0, 3, size=60)
    (tmp_path / "records").mkdir()
    np.savez(tmp_path / "records" / "train.npz", x=features, y=labels)

    job = PrivateTrainingJob.model_validate(
        {
            "apiVersion": "ppml.dev/v1alpha1",
            "kind": "PrivateTrainingJob",
            "metadata": {"name": "npz"},
            "spec": {
                "budgetRef": {"name": "clinic"},
                "privacy": {"noiseMultiplier": "1.1", "delta": "1e-5"},
                "data": {
                    "source": "Volume",
                    "volume": {"claimName": "records", "path": "records/train.npz",
                               "format": "Npz"},
                    "numRecords": 60,
                    "testFraction": "0.25",
                },
                "model": {"architecture": "Mlp"},
                "training": {"epochs": 1, "batchSize": 16, "learningRate": "0.1"},
            },
        }
    )
    rendered = data_config(job.spec.data)
    rendered["volume"]["path"] = rendered["volume"]["path"].replace(DATA_MOUNT, str(tmp_path))
    split = build_dataset(DataConfig.model_validate(rendered))
    assert split.x_train.shape == (45, 16) and split.x_test.shape == (15, 16)
    assert split.num_classes == int(labels.max()) + 1


def test_an_npz_without_x_and_y_is_refused_saying_how_to_write_it(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, pixels=np.zeros((10, 2)), label=np.zeros(10, dtype=np.int64))
    config = DataConfig.model_validate(
        {"source": "Volume", "volume": {"path": str(path), "format": "Npz"}, "numRecords": 8}
    )
    with pytest.raises(InvalidConfigError, match=r"np.savez\(path, x=features, y=labels\)"):
        build_dataset(config)


def test_the_contract_refuses_a_label_column_for_npz_as_the_api_does():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="Npz reads arrays x and y"):
        DataConfig.model_validate(
            {"source": "Volume", "numRecords": 8,
             "volume": {"path": "/d.npz", "format": "Npz", "labelColumn": "y"}}
        )


def test_an_npz_volume_config_loads_back_from_its_own_dump():
    """The operator dumps the contract config; the pod loads it. The dump of an Npz volume
    holds labelColumn's default, which the round trip must accept (the two-party demo's trainer
    refused it before the pod read a record)."""
    config = DataConfig.model_validate(
        {"source": "Volume", "numRecords": 8, "volume": {"path": "/d.npz", "format": "Npz"}})
    again = DataConfig.model_validate_json(config.model_dump_json(by_alias=True,
                                                                  exclude_none=True))
    assert again == config

