"""Privacy events: validation, hashing and the versioned serialised form."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from ppml_operator.privacy import (
    EVENT_SCHEMA,
    ClientLevelDpEvent,
    DpSgdEvent,
    GaussianEvent,
    InvalidPrivacyEventError,
    InvalidPrivacyParameterError,
    LaplaceEvent,
    LocalDpSgdEvent,
    event_from_dict,
    event_to_dict,
)

EVENTS = {
    "dp-sgd of a training job": DpSgdEvent(Decimal("1.1"), Decimal("0.004"), 2340),
    "client-level dp of a federation": ClientLevelDpEvent(Decimal("0.8"), Decimal("0.5"), 20),
    "local dp-sgd at one silo": LocalDpSgdEvent("clinic-a", Decimal("1.3"), Decimal("0.05"), 600),
    "one gaussian release": GaussianEvent(Decimal("4")),
    "ten laplace releases": LaplaceEvent(Decimal("2.5"), 10),
    "a 28-digit sampling rate": DpSgdEvent(Decimal("1.0"), Decimal(256) / Decimal(60000), 2344),
}


@pytest.mark.parametrize("event", EVENTS.values(), ids=EVENTS.keys())
def test_serialised_event_round_trips_through_json(event: object) -> None:
    data = event_to_dict(event)  # type: ignore[arg-type]
    assert data["schema"] == EVENT_SCHEMA
    again = event_from_dict(json.loads(json.dumps(data)))
    assert again == event
    assert hash(again) == hash(event)
    assert event_to_dict(again) == data


def test_serialised_form_is_the_documented_one() -> None:
    event = DpSgdEvent(Decimal("1.1"), Decimal("0.004"), 2340)
    assert event_to_dict(event) == {
        "schema": "ppml.dev/privacy-event/v1",
        "type": "DpSgd",
        "noiseMultiplier": "1.1",
        "sampleRate": "0.004",
        "steps": 2340,
    }


def test_events_coerce_strings_and_compare_by_value() -> None:
    assert DpSgdEvent("1.10", "0.004", 10) == DpSgdEvent(Decimal("1.1"), Decimal("0.004"), 10)  # type: ignore[arg-type]
    assert len({GaussianEvent(Decimal("2")), GaussianEvent(Decimal("2.0"))}) == 1


def test_count_may_be_left_out_of_a_serialised_gaussian() -> None:
    data = {"schema": EVENT_SCHEMA, "type": "Gaussian", "noiseMultiplier": "3"}
    assert event_from_dict(data) == GaussianEvent(Decimal("3"), 1)


BAD_DICTS = {
    "unknown schema version": (
        {"schema": "ppml.dev/privacy-event/v2", "type": "DpSgd"},
        "schema",
    ),
    "no schema": ({"type": "DpSgd"}, "schema"),
    "unknown type": ({"schema": EVENT_SCHEMA, "type": "Exponential"}, "Exponential"),
    "missing steps": (
        {"schema": EVENT_SCHEMA, "type": "DpSgd", "noiseMultiplier": "1", "sampleRate": "0.1"},
        "steps",
    ),
    "unknown field": (
        {"schema": EVENT_SCHEMA, "type": "Gaussian", "noiseMultiplier": "1", "sigma": "1"},
        "sigma",
    ),
    "float instead of decimal string": (
        {"schema": EVENT_SCHEMA, "type": "Gaussian", "noiseMultiplier": 1.5},
        "noiseMultiplier",
    ),
    "sample rate above one": (
        {
            "schema": EVENT_SCHEMA,
            "type": "DpSgd",
            "noiseMultiplier": "1",
            "sampleRate": "1.5",
            "steps": 3,
        },
        "sampleRate",
    ),
    "not a mapping": (["DpSgd"], "mapping"),
}


@pytest.mark.parametrize(("data", "named"), BAD_DICTS.values(), ids=BAD_DICTS.keys())
def test_bad_serialised_event_is_refused_naming_the_problem(data: object, named: str) -> None:
    with pytest.raises(InvalidPrivacyEventError, match=named):
        event_from_dict(data)  # type: ignore[arg-type]


BAD_EVENTS = {
    "zero noise": (lambda: DpSgdEvent(Decimal(0), Decimal("0.1"), 10), "noiseMultiplier"),
    "negative noise": (lambda: GaussianEvent(Decimal("-1")), "noiseMultiplier"),
    "zero sample rate": (lambda: DpSgdEvent(Decimal(1), Decimal(0), 10), "sampleRate"),
    "zero steps": (lambda: DpSgdEvent(Decimal(1), Decimal("0.1"), 0), "steps"),
    "steps as text": (lambda: DpSgdEvent(Decimal(1), Decimal("0.1"), "10"), "steps"),  # type: ignore[arg-type]
    "zero rounds": (lambda: ClientLevelDpEvent(Decimal(1), Decimal("0.1"), 0), "rounds"),
    "no silo name": (lambda: LocalDpSgdEvent("", Decimal(1), Decimal("0.1"), 3), "silo"),
    "nan noise": (lambda: GaussianEvent(Decimal("NaN")), "noiseMultiplier"),
    "infinite laplace scale": (lambda: LaplaceEvent(Decimal("Infinity")), "scaleOverSensitivity"),
}


@pytest.mark.parametrize(("make", "named"), BAD_EVENTS.values(), ids=BAD_EVENTS.keys())
def test_invalid_parameters_are_refused_naming_the_field(make: object, named: str) -> None:
    with pytest.raises(InvalidPrivacyParameterError, match=named):
        make()  # type: ignore[operator]
