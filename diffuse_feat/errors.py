"""Errors a user can fix. Every command (``train.py``, ``reproduce``, ``analyze``) prints them as one sentence instead
of a traceback, through :func:`one_sentence_errors`.

Each also derives from the matching built-in exception, so ``except ValueError`` etc. still work.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator

__all__ = ["UserError", "ConfigError", "ShapeError", "SigmaError", "DataNotFoundError",
           "NonFiniteLossError", "MissingGroundTruth",
           "CheckpointError", "RunFolderBusyError", "error_chain", "user_error_in",
           "one_sentence_errors"]


class UserError(Exception):
    """Base class: a message that names the field and the fix."""


class ConfigError(UserError, ValueError):
    pass


class ShapeError(UserError, ValueError):
    pass


class SigmaError(UserError, ValueError):
    """A noise level a denoiser cannot take: NaN, infinite or negative, or not one value (or one per sample)."""


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


def error_chain(error: BaseException) -> list[BaseException]:
    """``error``, then its cause (or context), and so on: the errors that led to it, outermost first."""
    seen: list[BaseException] = []
    while error is not None and error not in seen:
        seen.append(error)
        error = error.__cause__ or error.__context__
    return seen


def user_error_in(error: BaseException) -> UserError | None:
    """The :class:`UserError` behind ``error`` (jsonargparse wraps errors raised while it instantiates classes)."""
    return next((e for e in error_chain(error) if isinstance(e, UserError)), None)


@contextlib.contextmanager
def one_sentence_errors(describe: Callable[[Exception], str | None] | None = None) -> Iterator[None]:
    """A command's body: a :class:`UserError` (anywhere in the chain of the exception raised), or whatever else
    ``describe(error)`` puts in words, ends the program with ``error: <sentence>`` on stderr and status 1, without a
    traceback (``DIFFUSE_FEAT_TRACEBACK=1`` shows it). Anything else propagates as it is: that is a bug."""
    try:
        yield
    except Exception as err:
        if os.environ.get("DIFFUSE_FEAT_TRACEBACK"):
            raise
        user_error = user_error_in(err)
        message = str(user_error) if user_error is not None else describe(err) if describe is not None else None
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(1) from None
