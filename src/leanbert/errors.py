"""One exception type for every bad input a user can give leanbert.

The CLI turns a :class:`LeanbertError` into one line on stderr and a non-zero exit,
never a traceback. Library code raises it with a message that says what is wrong
*and* how to fix it, e.g. ``config.json: unknown key 'hiden_size' (did you mean
'hidden_size'?)``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LeanbertError(Exception):
    """A user-facing error: the message is one line naming the problem and the fix.

    ``exit_code`` is what the ``leanbert`` program exits with: 2 for usage and configuration
    errors (the default), 1 for a run that failed (:class:`RunFailed`), 130 for an
    interruption that saved a checkpoint (``train.engine.Interrupted``).
    """

    exit_code = 2


class ConfigError(LeanbertError):
    """A configuration key or value is invalid."""


class CheckpointError(LeanbertError):
    """A checkpoint directory or file is missing, incomplete, corrupt or incompatible."""


class DataError(LeanbertError):
    """An input data file is missing, empty, malformed or not UTF-8."""


class MissingDependency(LeanbertError):
    """An optional package that this feature needs is not installed (the message gives the
    pip command)."""


class RunFailed(LeanbertError):
    """A run that had started failed (it diverged, or bad data turned up mid-run): exit 1,
    so that scripts can tell it from a usage or configuration error (exit 2)."""

    exit_code = 1


class BadDataMidRun(RunFailed, DataError):
    """Data that read well at the start of a run turned out unreadable or malformed later."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return `` (did you mean 'x'?)`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
