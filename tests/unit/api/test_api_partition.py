"""Silos' shards of a built-in set in the API: sizes, schemes and overlaps refused at apply."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ppml_operator.api.errors import InvalidSpecError
from ppml_operator.api.v1alpha1 import FederatedJob
from ppml_runtime.federated.partition import BUILTIN_CLASS_COUNTS, shard_size
from ppml_testing.fedjobs import make_fedjob


def dirichlet(index: int, count: int = 3, records: int | None = None,
              alpha: str = "0.5") -> dict[str, object]:
    size = shard_size(BUILTIN_CLASS_COUNTS["Digits"], "Dirichlet", index, count, 0, alpha)
    return {"source": "Builtin", "builtin": {"name": "Digits"},
            "numRecords": size if records is None else records,
            "partition": {"scheme": "Dirichlet", "index": index, "count": count,
                          "alpha": alpha}}


def with_data(*data: dict[str, object]) -> dict[str, object]:
    job = make_fedjob().clients(len(data)).obj()
    for entry, d in zip(job["spec"]["clients"], data, strict=True):
        entry["data"] = d
    return job


def test_dirichlet_shards_of_their_own_size_are_accepted():
    fj = FederatedJob.model_validate(with_data(*(dirichlet(i) for i in range(3))))
    sizes = [c.data.num_records for c in fj.spec.clients]
    assert sum(sizes) == 1797 and len(set(sizes)) > 1


@pytest.mark.parametrize(("data", "fragment"), [
    ((dirichlet(0, records=600), dirichlet(1), dirichlet(2)),
     "shard 0 of 3 of Digits (Dirichlet, alpha 0.5, seed 0) holds"),
    ((dirichlet(0), dirichlet(1), dirichlet(1)), "disjoint shards"),
    ((dirichlet(0), dirichlet(1), dirichlet(2, alpha="1")), "disjoint shards"),
    ((dirichlet(0, count=2), {**dirichlet(1, count=2), "partition": {
        "scheme": "Iid", "index": 1, "count": 2}, "numRecords": 898}), "disjoint shards"),
    (({"source": "Synthetic", "synthetic": {"numFeatures": 4, "numClasses": 2},
       "numRecords": 100, "partition": {"index": 0, "count": 2}},),
     "partition applies to source Builtin only"),
    (({"source": "Builtin", "builtin": {"name": "Digits"}, "numRecords": 599,
       "partition": {"index": 0, "count": 3, "alpha": "0.5"}},),
     "alpha is required with scheme Dirichlet and applies to it only"),
    (({"source": "Builtin", "builtin": {"name": "Digits"}, "numRecords": 599,
       "partition": {"index": 3, "count": 3}},), "partition.index must be below"),
], ids=["a Dirichlet shard declared with another size (only Python can tell)",
        "the same Dirichlet shard twice",
        "two silos cutting with different alphas",
        "Iid and Dirichlet cuts of one set",
        "a partition of synthetic data",
        "alpha on an Iid cut",
        "an index past the count"])
def test_overlapping_or_mis_sized_shards_are_refused(data, fragment):
    with pytest.raises(ValidationError, match=re_escape(fragment)):
        FederatedJob.model_validate(with_data(*data))


def re_escape(text: str) -> str:
    import re

    return re.escape(text)


def test_the_operator_names_the_silo_whose_shard_size_is_wrong():
    from ppml_operator.reconcile.cost import job_charges

    with pytest.raises(InvalidSpecError) as err:
        job_charges(with_data(dirichlet(0), dirichlet(1, records=10), dirichlet(2)))
    assert err.value.field == "spec.clients[1].data"
    assert "set numRecords to" in err.value.message


def test_a_modulus_beyond_flowers_32_bit_masks_is_refused():
    job = make_fedjob().secagg(numShares=3, reconstructionThreshold=2, modulusRange=2**40,
                               quantizationRange=2**20).obj()
    with pytest.raises(ValidationError, match="less than or equal to 4294967296"):
        FederatedJob.model_validate(job)


def test_a_modulus_that_is_not_a_power_of_two_is_refused():
    job = make_fedjob().secagg(numShares=3, reconstructionThreshold=2, modulusRange=3 * 2**30,
                               quantizationRange=2**20).obj()
    with pytest.raises(ValidationError, match="modulusRange must be a power of 2"):
        FederatedJob.model_validate(job)
