"""Errors that the CLI reports as one ``error:`` line with exit code 2."""


class UserError(Exception):
    """Unusable input or environment: report ``str(exc)`` to the user, no traceback."""


class SourceError(UserError):
    """A frame source cannot be opened or died."""


class ModelError(UserError):
    """A model file is missing, corrupt or of the wrong shape."""
