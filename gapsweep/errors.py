"""The exceptions for user mistakes.

A ``GapsweepError`` carries a message that says what is wrong and how to mend it; the CLI prints
it as a single line and exits non-zero. Anything else is a programming error and keeps its
traceback. Every package (``search_spaces``, ``storage``, ``sweeps``) raises these, so they live
in the umbrella package that all of them may import.
"""

from __future__ import annotations


class GapsweepError(Exception):
    """A mistake in the user's input: a space, a data file, a study name, a database URL."""


class SpaceError(GapsweepError):
    """A search space that cannot be sampled: unknown kind, bad bounds, wrong types."""


class DataError(GapsweepError):
    """Data that cannot train a model: wrong shapes, NaNs, unknown data set, unreadable file."""


class ConfigError(GapsweepError):
    """A sweep file or flag with an unknown key or a value out of range."""


class StudyNotFoundError(GapsweepError):
    """A study name (or trial number) that is not in the database."""


class StorageError(GapsweepError):
    """A database that cannot be reached or is not a gapsweep/Optuna database."""


class EmptyDatabaseError(StorageError):
    """A database with no tables at all: no sweep was launched there yet. A query about a study
    is a mistake there; a listing of the studies is simply empty."""


class SweepFailedError(GapsweepError):
    """A sweep stopped because its trials kept failing (e.g. every one diverged)."""


class BudgetTaken(Exception):
    """Not a mistake: a storage proxy refused a new trial because concurrent claims took the
    study's budget first; the worker waits for running trials as it would have anyway."""


def one_line(exc: BaseException) -> str:
    """``Type: the first line of its message`` (the type alone for an empty one): an error raised
    by the user's own code, told in one line without its traceback."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
