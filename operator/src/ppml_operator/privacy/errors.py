"""Domain exceptions of the privacy-accounting library.

Every message is one sentence that names the offending value, so that the operator can put it
in a condition and the CLI can print it as is.
"""


class PrivacyAccountingError(Exception):
    """Base class of every error raised by :mod:`ppml_operator.privacy`."""


class InvalidPrivacyParameterError(PrivacyAccountingError, ValueError):
    """An epsilon, delta, noise multiplier, sampling rate or count is malformed or out of range."""


class CalibrationError(PrivacyAccountingError):
    """No noise multiplier in the searched range meets the target epsilon."""


class InvalidPrivacyEventError(PrivacyAccountingError, ValueError):
    """A serialised privacy event has an unknown schema or type, or malformed fields."""
