"""Disjoint shards of a built-in set: every record in exactly one silo, sizes known in advance."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine

from ppml_runtime.federated.contract import ClientEntry
from ppml_runtime.federated.partition import BUILTIN_CLASS_COUNTS, shard_indices, shard_size
from ppml_runtime.federated.silo_data import build_silo_data

LOADERS = {"Digits": load_digits, "BreastCancer": load_breast_cancer, "Iris": load_iris,
           "Wine": load_wine}


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_the_class_counts_the_operator_sizes_shards_from_are_the_real_ones(name):
    labels = LOADERS[name]().target
    assert tuple(np.bincount(labels).tolist()) == BUILTIN_CLASS_COUNTS[name]


@pytest.mark.parametrize(("scheme", "count", "seed", "alpha"), [
    ("Iid", 3, 0, None),
    ("Iid", 7, 5, None),
    ("Dirichlet", 3, 0, "0.5"),
    ("Dirichlet", 10, 3, "0.1"),
    ("Dirichlet", 4, 1, "100"),
], ids=["iid 3", "iid 7 seeded", "dirichlet 0.5", "dirichlet 0.1 (very skewed)",
        "dirichlet 100 (near iid)"])
def test_shards_partition_the_set_and_their_sizes_need_no_data(scheme, count, seed, alpha):
    labels = load_digits().target
    shards = [shard_indices(labels, scheme, i, count, seed, alpha) for i in range(count)]
    every = np.concatenate(shards)
    assert every.shape[0] == labels.shape[0] and np.unique(every).shape[0] == labels.shape[0]
    assert [s.shape[0] for s in shards] == [
        shard_size(BUILTIN_CLASS_COUNTS["Digits"], scheme, i, count, seed, alpha)
        for i in range(count)
    ]


def test_a_small_alpha_skews_the_labels_and_a_seed_changes_the_cut():
    labels = load_digits().target
    skewed = shard_indices(labels, "Dirichlet", 0, 3, 0, "0.1")
    iid = shard_indices(labels, "Iid", 0, 3, 0)
    assert np.bincount(labels[skewed], minlength=10).min() < np.bincount(
        labels[iid], minlength=10).min()
    assert not np.array_equal(iid, shard_indices(labels, "Iid", 0, 3, 1))


def test_a_silo_loads_exactly_its_dirichlet_shard():
    size = shard_size(BUILTIN_CLASS_COUNTS["Digits"], "Dirichlet", 1, 3, 0, "0.5")
    test = int(np.ceil(size * 0.2))
    entry = ClientEntry.model_validate({
        "name": "silo-1",
        "data": {"source": "Builtin", "builtin": {"name": "Digits"}, "numRecords": size - test},
        "partition": {"scheme": "Dirichlet", "index": 1, "count": 3, "alpha": "0.5"},
    })
    data = build_silo_data(entry)
    assert data.y_train.shape[0] + data.y_test.shape[0] == size
