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
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
