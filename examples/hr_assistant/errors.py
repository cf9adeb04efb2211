"""The one error the commands report: a clear one-line message, exit status 1."""


class AppError(Exception):
    """A failure the user can act on; ``str(exc)`` is the whole message."""
