"""Errors a user can fix. ``train.py`` prints them as one sentence instead of a traceback.

Each also derives from the matching built-in exception, so ``except ValueError`` etc. still work.
"""

from __future__ import annotations

__all__ = ["UserError", "ConfigError", "ShapeError", "DataNotFoundError", "NonFiniteLossError", "MissingGroundTruth",
           "CheckpointError", "RunFolderBusyError"]


class UserError(Exception):
    """Base class: a message that names the field and the fix."""


class ConfigError(UserError, ValueError):
    pass


class ShapeError(UserError, ValueError):
    pass


class DataNotFoundError(UserError, FileNotFoundError):
    pass


class NonFiniteLossError(UserError, FloatingPointError):
    pass


class MissingGroundTruth(UserError, LookupError):
    """A diagnostic asked a DataModule for something it does not know.

    Not an ``AttributeError``: raised inside a property it would be swallowed by ``hasattr``/``getattr`` and the
    capability would silently look absent."""


class CheckpointError(UserError, ValueError):
    """A checkpoint that is missing, empty or damaged, or a resume that would not continue its run as it was."""


class RunFolderBusyError(UserError, RuntimeError):
    """Another process is training in the same run folder."""
