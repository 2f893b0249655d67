"""Privacy events: what a job does to the data, in a form an accountant can price.

Each event is a frozen, hashable dataclass with exact :class:`~decimal.Decimal` parameters, so
that a charge can be stored in a budget's ledger and recomposed later to exactly the same
number. :func:`event_to_dict` / :func:`event_from_dict` give the stable, versioned serialised
form (schema ``ppml.dev/privacy-event/v1``): camelCase keys, decimals as strings, JSON-safe.

Evolution rule (as for the Kubernetes API and dp_accounting's events): a new field is optional,
a field's meaning never changes, and a new meaning gets a new ``type`` or a new schema version.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from ppml_operator.privacy.decimals import to_decimal
from ppml_operator.privacy.errors import InvalidPrivacyEventError, InvalidPrivacyParameterError

EVENT_SCHEMA: Final = "ppml.dev/privacy-event/v1"
"""The schema identifier written into every serialised event."""


def _positive(value: object, name: str) -> Decimal:
    result = to_decimal(value, name)
    if result <= 0:
        raise InvalidPrivacyParameterError(f"{name} {str(value)!r} must be greater than 0.")
    return result


def _rate(value: object, name: str) -> Decimal:
    result = to_decimal(value, name)
    if not 0 < result <= 1:
        raise InvalidPrivacyParameterError(
            f"{name} {str(value)!r} must be greater than 0 and at most 1."
        )
    return result


def _count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidPrivacyParameterError(f"{name} {value!r} must be an integer.")
    if value < 1:
        raise InvalidPrivacyParameterError(f"{name} {value!r} must be at least 1.")
    return value


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


@dataclass(frozen=True)
class DpSgdEvent:
    """DP-SGD with Poisson sampling: a subsampled Gaussian mechanism composed ``steps`` times.

    Attributes
    ----------
    noise_multiplier
        Standard deviation of the Gaussian noise divided by the clipping norm (> 0).
    sample_rate
        Poisson sampling probability: expected batch size / number of records, in (0, 1].
    steps
        Number of noisy gradient steps (>= 1), across every attempt of the job.

    """

    noise_multiplier: Decimal
    sample_rate: Decimal
    steps: int

    def __post_init__(self) -> None:
        _set(self, "noise_multiplier", _positive(self.noise_multiplier, "noiseMultiplier"))
        _set(self, "sample_rate", _rate(self.sample_rate, "sampleRate"))
        _set(self, "steps", _count(self.steps, "steps"))


@dataclass(frozen=True)
class ClientLevelDpEvent:
    """Federated central DP at client level (DP-FedAvg) with Poisson client sampling.

    Charges written before :class:`FixedClientSamplingDpEvent` existed carry this event; it
    still parses and prices as it always did (a meaning never changes), but the operator no
    longer charges it: Flower samples a fixed number of clients without replacement.

    The mathematics are those of :class:`DpSgdEvent` (a Poisson-subsampled Gaussian composed
    ``rounds`` times), but the protected unit is a whole client, not a record.

    Attributes
    ----------
    noise_multiplier
        Noise standard deviation divided by the clipping norm of a client's update (> 0).
    sample_rate
        Client sampling probability: clients per round / number of clients, in (0, 1].
    rounds
        Number of federated rounds (>= 1).

    """

    noise_multiplier: Decimal
    sample_rate: Decimal
    rounds: int

    def __post_init__(self) -> None:
        _set(self, "noise_multiplier", _positive(self.noise_multiplier, "noiseMultiplier"))
        _set(self, "sample_rate", _rate(self.sample_rate, "sampleRate"))
        _set(self, "rounds", _count(self.rounds, "rounds"))


@dataclass(frozen=True)
class FixedClientSamplingDpEvent:
    """Federated central DP as Flower runs it: a fixed number of clients per round.

    Each round samples exactly ``clients_per_round`` of the ``clients`` silos uniformly without
    replacement, averages their clipped updates with equal weights and adds Gaussian noise of
    standard deviation ``noise_multiplier * C`` to the sum (``noise_multiplier * C /
    clients_per_round`` to the average), ``rounds`` times. The protected unit is a client, under
    the replace-one relation (the set of silos is fixed and named in the spec; what differs is
    one silo's data, so one update): the sum's L2 sensitivity is ``2 C``, so the Gaussian this
    charges is ``noise_multiplier / 2`` per unit of sensitivity (see ``docs/ledger.md``).

    Attributes
    ----------
    noise_multiplier
        Noise standard deviation on the sum divided by the clipping norm ``C`` (> 0), as
        Flower's ``noise_multiplier``.
    clients
        Number of clients (silos) the sample is drawn from (>= 1).
    clients_per_round
        Clients sampled each round, without replacement (1 to ``clients``); all of them is no
        sampling at all.
    rounds
        Number of federated rounds (>= 1).

    """

    noise_multiplier: Decimal
    clients: int
    clients_per_round: int
    rounds: int

    def __post_init__(self) -> None:
        _set(self, "noise_multiplier", _positive(self.noise_multiplier, "noiseMultiplier"))
        _set(self, "clients", _count(self.clients, "clients"))
        _set(self, "clients_per_round", _count(self.clients_per_round, "clientsPerRound"))
        _set(self, "rounds", _count(self.rounds, "rounds"))
        if self.clients_per_round > self.clients:
            raise InvalidPrivacyParameterError(
                f"clientsPerRound {self.clients_per_round} must be at most clients "
                f"{self.clients}."
            )


@dataclass(frozen=True)
class LocalDpSgdEvent:
    """Local DP-SGD run inside one silo of a federation; it charges that silo's budget.

    Attributes
    ----------
    silo
        The name of the client (data silo) whose records are protected.
    noise_multiplier
        Noise standard deviation divided by the clipping norm (> 0).
    sample_rate
        Poisson sampling probability within the silo, in (0, 1].
    steps
        Total local steps the silo executes over all rounds (>= 1).

    """

    silo: str
    noise_multiplier: Decimal
    sample_rate: Decimal
    steps: int

    def __post_init__(self) -> None:
        if not isinstance(self.silo, str) or not self.silo:
            raise InvalidPrivacyParameterError(f"silo {self.silo!r} must be a non-empty name.")
        _set(self, "noise_multiplier", _positive(self.noise_multiplier, "noiseMultiplier"))
        _set(self, "sample_rate", _rate(self.sample_rate, "sampleRate"))
        _set(self, "steps", _count(self.steps, "steps"))


@dataclass(frozen=True)
class GaussianEvent:
    """The Gaussian mechanism on a sensitivity-1 query, applied ``count`` times.

    Attributes
    ----------
    noise_multiplier
        Noise standard deviation divided by the query's L2 sensitivity (> 0).
    count
        Number of independent releases (>= 1).

    """

    noise_multiplier: Decimal
    count: int = 1

    def __post_init__(self) -> None:
        _set(self, "noise_multiplier", _positive(self.noise_multiplier, "noiseMultiplier"))
        _set(self, "count", _count(self.count, "count"))


@dataclass(frozen=True)
class LaplaceEvent:
    """The Laplace mechanism on a query, applied ``count`` times.

    Attributes
    ----------
    scale_over_sensitivity
        The Laplace scale ``b`` divided by the query's L1 sensitivity (> 0); one release is
        ``1 / scale_over_sensitivity``-DP.
    count
        Number of independent releases (>= 1).

    """

    scale_over_sensitivity: Decimal
    count: int = 1

    def __post_init__(self) -> None:
        _set(
            self,
            "scale_over_sensitivity",
            _positive(self.scale_over_sensitivity, "scaleOverSensitivity"),
        )
        _set(self, "count", _count(self.count, "count"))


PrivacyEvent = (
    DpSgdEvent
    | ClientLevelDpEvent
    | FixedClientSamplingDpEvent
    | LocalDpSgdEvent
    | GaussianEvent
    | LaplaceEvent
)
"""Any event this library can price."""

# type name -> (class, ((attribute, camelCase key, kind), ...)); kind is "decimal", "int", "str".
_FIELDS: Final[dict[str, tuple[type[Any], tuple[tuple[str, str, str], ...]]]] = {
    "DpSgd": (
        DpSgdEvent,
        (
            ("noise_multiplier", "noiseMultiplier", "decimal"),
            ("sample_rate", "sampleRate", "decimal"),
            ("steps", "steps", "int"),
        ),
    ),
    "ClientLevelDp": (
        ClientLevelDpEvent,
        (
            ("noise_multiplier", "noiseMultiplier", "decimal"),
            ("sample_rate", "sampleRate", "decimal"),
            ("rounds", "rounds", "int"),
        ),
    ),
    "FixedClientSamplingDp": (
        FixedClientSamplingDpEvent,
        (
            ("noise_multiplier", "noiseMultiplier", "decimal"),
            ("clients", "clients", "int"),
            ("clients_per_round", "clientsPerRound", "int"),
            ("rounds", "rounds", "int"),
        ),
    ),
    "LocalDpSgd": (
        LocalDpSgdEvent,
        (
            ("silo", "silo", "str"),
            ("noise_multiplier", "noiseMultiplier", "decimal"),
            ("sample_rate", "sampleRate", "decimal"),
            ("steps", "steps", "int"),
        ),
    ),
    "Gaussian": (
        GaussianEvent,
        (("noise_multiplier", "noiseMultiplier", "decimal"), ("count", "count", "int")),
    ),
    "Laplace": (
        LaplaceEvent,
        (
            ("scale_over_sensitivity", "scaleOverSensitivity", "decimal"),
            ("count", "count", "int"),
        ),
    ),
}
_OPTIONAL: Final = frozenset({"count"})
"""Attributes that may be absent from a serialised event (they default to 1)."""
COUNT_FIELDS: Final[dict[str, str]] = {
    "DpSgd": "steps",
    "LocalDpSgd": "steps",
    "ClientLevelDp": "rounds",
    "FixedClientSamplingDp": "rounds",
}
"""The serialised key of each event type's self-composition count (``count`` otherwise)."""
_TYPE_OF: Final[dict[type[Any], str]] = {cls: name for name, (cls, _) in _FIELDS.items()}


def event_to_dict(event: PrivacyEvent) -> dict[str, Any]:
    """Serialise ``event`` to its stable, JSON-safe form.

    Parameters
    ----------
    event
        Any :data:`PrivacyEvent`.

    Returns
    -------
    dict
        ``{"schema": "ppml.dev/privacy-event/v1", "type": "DpSgd", "noiseMultiplier": "1.1",
        "sampleRate": "0.004", "steps": 2340}``: decimals as strings (exactly as given),
        counts as integers.

    Raises
    ------
    InvalidPrivacyEventError
        If ``event`` is not one of this library's events.

    """
    type_name = _TYPE_OF.get(type(event))
    if type_name is None:
        raise InvalidPrivacyEventError(f"{event!r} is not a privacy event of this library.")
    out: dict[str, Any] = {"schema": EVENT_SCHEMA, "type": type_name}
    for attribute, key, kind in _FIELDS[type_name][1]:
        value = getattr(event, attribute)
        out[key] = str(value) if kind == "decimal" else value
    return out


def event_from_dict(data: dict[str, Any]) -> PrivacyEvent:
    """Parse the serialised form written by :func:`event_to_dict`.

    Parameters
    ----------
    data
        A mapping with ``schema``, ``type`` and the type's fields.

    Returns
    -------
    PrivacyEvent
        The event, equal to the one that was serialised.

    Raises
    ------
    InvalidPrivacyEventError
        If the schema or the type is unknown, a field is missing or unexpected, or a value is
        malformed or out of range.

    """
    if not isinstance(data, dict):
        raise InvalidPrivacyEventError(f"privacy event {data!r} must be a mapping.")
    schema = data.get("schema")
    if schema != EVENT_SCHEMA:
        raise InvalidPrivacyEventError(
            f"privacy event schema {schema!r} is unknown; expected {EVENT_SCHEMA!r}."
        )
    type_name = data.get("type")
    if not isinstance(type_name, str) or type_name not in _FIELDS:
        raise InvalidPrivacyEventError(
            f"privacy event type {type_name!r} is unknown; expected one of "
            f"{', '.join(sorted(_FIELDS))}."
        )
    cls, fields = _FIELDS[type_name]
    keys = {key for _, key, _ in fields}
    extra = sorted(set(data) - keys - {"schema", "type"})
    if extra:
        raise InvalidPrivacyEventError(
            f"privacy event of type {type_name} has unknown field {extra[0]!r}."
        )
    kwargs: dict[str, Any] = {}
    for attribute, key, kind in fields:
        if key not in data:
            if attribute in _OPTIONAL:
                continue
            raise InvalidPrivacyEventError(
                f"privacy event of type {type_name} lacks field {key!r}."
            )
        value = data[key]
        if kind == "decimal" and not isinstance(value, str):
            raise InvalidPrivacyEventError(
                f"privacy event field {key!r} must be a decimal string, not {value!r}."
            )
        kwargs[attribute] = value
    try:
        event: PrivacyEvent = cls(**kwargs)
    except InvalidPrivacyParameterError as err:
        raise InvalidPrivacyEventError(f"privacy event of type {type_name}: {err}") from err
    return event
