"""Each silo's data: built once by the SuperNode role, read by every ClientApp process.

Flower starts a fresh ``flwr-clientapp`` process for every message, so whatever a ClientApp
imports or parses is paid again each round. The SuperNode role therefore builds its silo's
training and test splits once (scikit-learn, CSV or Parquet readers and all), checks the record
count that was paid for, and writes them as one uncompressed ``.npz``; a ClientApp only needs
numpy to read it back in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ppml_runtime.federated.contract import ClientEntry


@dataclass(frozen=True)
class SiloData:
    """A silo's splits, as a ClientApp uses them."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    image_shape: tuple[int, int, int] | None = None

    @property
    def num_features(self) -> int:
        """Number of features per record."""
        return int(self.x_train.shape[1])


def build_silo_data(entry: ClientEntry) -> SiloData:
    """Load, partition, split and check one silo's data.

    Parameters
    ----------
    entry
        The silo's entry in the federation config.

    Returns
    -------
    SiloData
        The silo's splits.

    Raises
    ------
    DataMismatchError
        When the silo's training split does not hold ``data.numRecords`` records.

    """
    from ppml_runtime.federated.partition import shard_indices
    from ppml_runtime.training.data import Records, load_records, split_records
    from ppml_runtime.training.errors import DataMismatchError

    records = load_records(entry.data)
    if entry.partition is not None:
        part = entry.partition
        if part.index >= part.count:
            raise DataMismatchError(
                f"clients[{entry.name}].partition.index {part.index} is not below count "
                f"{part.count}"
            )
        shard = shard_indices(
            records.labels, part.scheme, part.index, part.count, part.seed, part.alpha
        )
        records = Records(
            features=records.features[shard],
            labels=records.labels[shard],
            image_shape=records.image_shape,
        )
    split = split_records(records, entry.data.test_fraction, entry.data.split_seed)
    found = int(split.y_train.shape[0])
    if found != entry.data.num_records:
        raise DataMismatchError(
            f"clients[{entry.name}].data.numRecords is {entry.data.num_records} but the silo's "
            f"training split holds {found} records; the privacy cost paid for assumed "
            f"{entry.data.num_records}"
        )
    num_classes = max(int(split.num_classes), int(records.labels.max()) + 1)
    return SiloData(
        x_train=split.x_train,
        y_train=split.y_train,
        x_test=split.x_test,
        y_test=split.y_test,
        num_classes=num_classes,
        image_shape=split.image_shape,
    )


def save_silo_data(data: SiloData, path: str | Path) -> Path:
    """Write a silo's splits as one uncompressed ``.npz`` (fast to read back)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    shape = np.array(data.image_shape if data.image_shape else (), dtype=np.int64)
    tmp = target.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        x_train=data.x_train,
        y_train=data.y_train,
        x_test=data.x_test,
        y_test=data.y_test,
        num_classes=np.array(data.num_classes, dtype=np.int64),
        image_shape=shape,
    )
    tmp.replace(target)
    return target


def load_silo_data(path: str | Path) -> SiloData:
    """Read back what :func:`save_silo_data` wrote."""
    with np.load(Path(path)) as npz:
        shape = tuple(int(v) for v in npz["image_shape"])
        return SiloData(
            x_train=npz["x_train"],
            y_train=npz["y_train"],
            x_test=npz["x_test"],
            y_test=npz["y_test"],
            num_classes=int(npz["num_classes"]),
            image_shape=shape if len(shape) == 3 else None,
        )
