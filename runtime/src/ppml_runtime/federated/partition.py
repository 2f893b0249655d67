"""Disjoint shards of one data set, one per silo: IID or Dirichlet non-IID, seeded.

The operator and the runtime both use this module (numpy only, no torch, no kopf): the runtime
to carve its silo's shard out of a built-in set, the operator to know each shard's size before
it charges a budget (the privacy cost depends on the records a silo holds). A shard's size
depends only on the set's class counts, the scheme, ``count``, ``seed`` and ``alpha``, never on
where the records sit, so the operator computes it from :data:`BUILTIN_CLASS_COUNTS` without
loading any data.

Every record falls in exactly one of the ``count`` shards of one partitioning, so silos that
share a set, a scheme, a ``count``, a ``seed`` and an ``alpha`` but hold different indexes
never see the same record.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Literal

import numpy as np

PartitionScheme = Literal["Iid", "Dirichlet"]

#: Records per class of each built-in set, in label order (what the runtime's loaders return).
BUILTIN_CLASS_COUNTS: dict[str, tuple[int, ...]] = {
    "Digits": (178, 182, 177, 183, 181, 182, 181, 179, 174, 180),
    "BreastCancer": (212, 357),
    "Mnist5k": (500,) * 10,
    "Iris": (50, 50, 50),
    "Wine": (59, 71, 48),
}


def shard_indices(
    labels: np.ndarray,
    scheme: PartitionScheme,
    index: int,
    count: int,
    seed: int = 0,
    alpha: str | Decimal | float | None = None,
) -> np.ndarray:
    """Return the sorted record indices of shard ``index`` of ``count``.

    Parameters
    ----------
    labels
        The integer class label of every record of the whole set.
    scheme
        ``Iid``: a seeded permutation of all records cut into ``count`` near-equal parts
        (``numpy.array_split``: the first ``N % count`` shards hold one record more).
        ``Dirichlet``: for each class in label order, its records are permuted and cut by
        proportions drawn from ``Dirichlet(alpha, ..., alpha)`` over the ``count`` shards
        (label-skew non-IID; a small ``alpha`` gives each shard few classes).
    index, count
        Which shard, of how many.
    seed
        Seeds the permutation and the proportions.
    alpha
        The Dirichlet concentration (``Dirichlet`` only).

    Returns
    -------
    numpy.ndarray
        The shard's record indices, ascending.

    """
    if not 0 <= index < count:
        raise ValueError(f"partition index {index} is not in [0, {count})")
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    if scheme == "Iid":
        order = rng.permutation(labels.shape[0])
        return np.sort(np.array_split(order, count)[index])
    if scheme != "Dirichlet":
        raise ValueError(f"partition scheme {scheme!r} is not Iid or Dirichlet")
    if alpha is None or float(alpha) <= 0:
        raise ValueError("partition scheme Dirichlet needs a positive alpha")
    parts: list[np.ndarray] = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        members = members[rng.permutation(members.shape[0])]
        proportions = rng.dirichlet(np.full(count, float(alpha)))
        cuts = (np.cumsum(proportions)[:-1] * members.shape[0]).astype(np.int64)
        parts.append(np.split(members, cuts)[index])
    return np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)


def shard_size(
    class_counts: Sequence[int],
    scheme: PartitionScheme,
    index: int,
    count: int,
    seed: int = 0,
    alpha: str | Decimal | float | None = None,
) -> int:
    """Return how many records shard ``index`` of ``count`` holds, from the class counts alone."""
    labels = np.repeat(np.arange(len(class_counts)), np.asarray(class_counts, dtype=np.int64))
    return int(shard_indices(labels, scheme, index, count, seed, alpha).shape[0])
