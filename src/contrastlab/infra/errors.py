"""The mistakes a user can act on, each said in one line by the stage's error boundary (`infra.stage`).

A leaf module: every other module may raise these without importing anything else.
"""


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
