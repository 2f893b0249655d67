"""SecAgg+ parameters: every unsafe combination, and every one Flower refuses, fails at apply.

The models evaluate the CRD's CEL rules (``cel_eval``), so these are the refusals the API
server gives (``tests/integration/api/invalid/fedjob-*`` shows the same against a real one).
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ppml_operator.api.v1alpha1 import FederatedJob
from ppml_testing.fedjobs import make_fedjob

UNSAFE = {
    "threshold equal to the shares (Flower refuses)": (
        {"numShares": 3, "reconstructionThreshold": 3}, None, "less than numShares"),
    "threshold above the shares (Flower refuses)": (
        {"numShares": 3, "reconstructionThreshold": 4}, None, "less than numShares"),
    "2-of-4: a lying server and one colluder unmask a neighbour": (
        {"numShares": 4, "reconstructionThreshold": 2}, None, "exceed half of numShares"),
    "2 shares (Flower refuses integers of 2 or less)": (
        {"numShares": 2, "reconstructionThreshold": 2}, None, "greater than or equal to 3"),
    "more shares than clients per round": (
        {"numShares": 3, "reconstructionThreshold": 2}, 2, "must not exceed the clients"),
    "clients per round x quantizationRange wraps the modulus": (
        {"numShares": 3, "reconstructionThreshold": 2, "quantizationRange": 2**31,
         "modulusRange": 2**32}, 3, "must not exceed secureAggregation.modulusRange"),
    "every client by default, and the sum wraps the modulus": (
        {"numShares": 3, "reconstructionThreshold": 2, "quantizationRange": 2**31,
         "modulusRange": 2**32}, None, "must not exceed secureAggregation.modulusRange"),
    "quantizationRange not below modulusRange (Flower refuses)": (
        {"numShares": 3, "reconstructionThreshold": 2, "quantizationRange": 2**20,
         "modulusRange": 2**20}, None, "less than modulusRange"),
    "a modulus that is not a power of 2 (Flower refuses)": (
        {"numShares": 3, "reconstructionThreshold": 2, "quantizationRange": 2**20,
         "modulusRange": 3 * 2**20}, None, "power of 2"),
    "a modulus beyond Flower's 32-bit masks": (
        {"numShares": 3, "reconstructionThreshold": 2, "modulusRange": 2**33}, None,
        "less than or equal to 4294967296"),
}


@pytest.mark.parametrize(("secagg", "per_round", "fragment"), UNSAFE.values(), ids=UNSAFE.keys())
def test_unsafe_secagg_parameters_are_refused_at_apply(secagg, per_round, fragment):
    builder = make_fedjob().secagg(**secagg)
    if per_round is not None:
        builder = builder.with_spec(clientsPerRound=per_round)
    with pytest.raises(ValidationError, match=fragment):
        FederatedJob.model_validate(builder.obj())


@pytest.mark.parametrize("per_round", [None, 3])
def test_the_safe_neighbours_are_accepted(per_round):
    builder = make_fedjob().secagg(numShares=3, reconstructionThreshold=2,
                                   quantizationRange=2**30, modulusRange=2**32)
    if per_round is not None:
        builder = builder.with_spec(clientsPerRound=per_round)
    FederatedJob.model_validate(builder.obj())
