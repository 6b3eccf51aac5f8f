"""The mistakes a user can act on, each said in one line by the stage's error boundary (`infra.stage`).

A leaf module: every other module may raise these, and show a value in their line (`shown`), without importing
anything else.
"""

import reprlib

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 80, 80


def shown(value: object, limit: int = 80) -> str:
    """`value`'s repr for a one-line message, at most `limit` characters. reprlib stops at a few items per level, so
    even a value of billions of items (a YAML alias chain) is shown at once instead of never."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ParamError(ValueError):
    """A value in params.yaml that the pipeline cannot run with."""


class DataError(RuntimeError):
    """A data problem the user has to act on; the message is one line that says what to do."""


class FileError(Exception):
    """A file the pipeline cannot write or read, said in one line with the way out."""


class TrackingError(Exception):
    """MLflow could not record a result; the DVC outputs are unaffected."""


class TrainingDiverged(ParamError):
    """The loss became NaN or infinite: the params (usually the learning rate) cannot train this model."""
