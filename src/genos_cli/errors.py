"""The one exception type that reaches the user as a sentence instead of a traceback."""

from __future__ import annotations


class GenosError(Exception):
    """A problem the user can fix: bad input, a missing file, an invalid setting.

    The message is shown as-is, so it must be one clear sentence naming the file, line or
    field and what was expected. Library code raises it; the CLI turns it into exit code 1.
    """
