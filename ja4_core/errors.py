"""One exception tree for the scorer and the trainer.

Every error a user can meet derives from :class:`Ja4StreamError`; messages name the bad
value and, where it helps, the allowed ones.
"""

from __future__ import annotations


class Ja4StreamError(Exception):
    """Root of every error raised by ja4-stream."""


class ConfigError(Ja4StreamError):
    """A setting has a bad value; raised at start, the message names the setting."""


class BundleError(Ja4StreamError):
    """A model bundle is missing, corrupt, fails verification or cannot be used."""


class SchemaError(Ja4StreamError):
    """Input does not match what the model or the contract expects."""


class RecordError(SchemaError):
    """One input message cannot be scored; it goes to the DLQ with this reason."""


class ControlError(Ja4StreamError):
    """A control message is malformed, unsigned, badly signed or unsafe; it is refused."""

    #: The label a refusal is counted under (``refused:<reason>``).
    reason = "invalid"


class ControlMalformedError(ControlError):
    """A control message is not a JSON object of the contract's fields and types."""

    reason = "malformed"


class ControlSignatureError(ControlError):
    """A control message is unsigned, or its signature matches no accepted key."""

    reason = "signature"


class ControlUnexpectedError(ControlError):
    """Reading a control message raised something unforeseen (a bug); the message is refused."""

    reason = "error"


class ControlFutureError(ControlError):
    """A control message's ``issued_at`` is further ahead than ``CONTROL_MAX_FUTURE_SKEW_S``.

    Carries the verified :attr:`message`: a replica may take it up once it is due."""

    reason = "future"

    def __init__(self, text: str, message: object = None) -> None:
        super().__init__(text)
        self.message = message


class NotFittedError(Ja4StreamError):
    """A detector was asked to score before it was fitted."""


class StoreLockedError(Ja4StreamError):
    """Another trainer holds the model store lock."""
