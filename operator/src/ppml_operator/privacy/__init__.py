"""Privacy accounting: what a job costs and how charges compose (pure; built on dp-accounting).

Everything the operator and the CLI need is re-exported here::

    from ppml_operator.privacy import DpSgdEvent, epsilon_of
    epsilon_of([DpSgdEvent(Decimal("1.1"), Decimal("0.004"), 2340)], Decimal("1e-5"))

dp_accounting is imported lazily by the functions that compute, so importing this package (for
the events and decimal helpers) costs nothing. See ``docs/privacy-accounting.md``.
"""

from ppml_operator.privacy.accountant import Accountant, epsilon_of
from ppml_operator.privacy.calibrate import Calibration, calibrate_noise_multiplier
from ppml_operator.privacy.decimals import (
    SIGNIFICANT_DIGITS,
    format_cost,
    format_remaining,
    parse_delta,
    parse_epsilon,
)
from ppml_operator.privacy.errors import (
    CalibrationError,
    InvalidPrivacyEventError,
    InvalidPrivacyParameterError,
    PrivacyAccountingError,
)
from ppml_operator.privacy.events import (
    EVENT_SCHEMA,
    ClientLevelDpEvent,
    DpSgdEvent,
    FixedClientSamplingDpEvent,
    GaussianEvent,
    LaplaceEvent,
    LocalDpSgdEvent,
    PrivacyEvent,
    event_from_dict,
    event_to_dict,
)
from ppml_operator.privacy.ledger import Composition, Fit, LedgerAccount
from ppml_operator.privacy.rdp import RDP_ORDERS, RDP_ORDERS_ID, RdpCurve

__all__ = [
    "EVENT_SCHEMA",
    "RDP_ORDERS",
    "RDP_ORDERS_ID",
    "SIGNIFICANT_DIGITS",
    "Accountant",
    "Calibration",
    "CalibrationError",
    "ClientLevelDpEvent",
    "Composition",
    "DpSgdEvent",
    "Fit",
    "FixedClientSamplingDpEvent",
    "GaussianEvent",
    "InvalidPrivacyEventError",
    "InvalidPrivacyParameterError",
    "LaplaceEvent",
    "LedgerAccount",
    "LocalDpSgdEvent",
    "PrivacyAccountingError",
    "PrivacyEvent",
    "RdpCurve",
    "calibrate_noise_multiplier",
    "epsilon_of",
    "event_from_dict",
    "event_to_dict",
    "format_cost",
    "format_remaining",
    "parse_delta",
    "parse_epsilon",
]
