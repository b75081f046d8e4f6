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


class NotFittedError(Ja4StreamError):
    """A detector was asked to score before it was fitted."""


class StoreLockedError(Ja4StreamError):
    """Another trainer holds the model store lock."""
