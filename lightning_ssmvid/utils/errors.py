"""The one user-error type: a mistake in what the user asked for (a key, a value, a file), not a bug.

Every command prints it as one line (what, which key or file, the fix) and exits non-zero without a traceback
(``user_errors``); programming errors keep their traceback.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager


class UserError(Exception):
    """A mistake the user can fix; its message is the whole story."""


@contextmanager
def user_errors():
    """Around a command's main: a ``UserError`` ends the process with ``error: <message>`` and exit status 2."""
    try:
        yield
    except Exception as error:
        cause = user_error_in(error)
        if cause is None:
            raise
        print(f"error: {cause}", file=sys.stderr)
        raise SystemExit(2) from None


def user_error_in(error: BaseException | None) -> UserError | None:
    """The ``UserError`` behind ``error`` (Hydra's ``instantiate`` wraps what a constructor raises), if any."""
    from omegaconf.errors import MissingMandatoryValue

    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, UserError):
            return error
        if isinstance(error, MissingMandatoryValue):  # a ??? key of a config group, e.g. data=video_folder's root
            key = getattr(error, "full_key", None) or "KEY"
            hint = "DIR, the folder of your videos" if key == "data.root" else "VALUE"
            return UserError(f"{key} is not set: pass {key}={hint}")
        error, seen = error.__cause__ or error.__context__, seen + 1
    return None
