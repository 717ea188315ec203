"""The one base class of errors whose message is written for the user as is (one line, no
traceback): :func:`videoattn.cli.exit_on_user_error` catches it and nothing else, so any other
exception (a bug) reaches the user with its traceback.

A user error may keep a second, built-in base (``ValueError``, ``FileNotFoundError``, ``OSError``)
where other code catches it by that.
"""


class OneLineError(Exception):
    """The tools print ``<prefix>: <message>`` and exit with status 1 (see ``videoattn.cli``)."""

    prefix = "error"


class UsageError(OneLineError, ValueError):
    """A setting, argument or input the user gave cannot be used (a config value out of range, an
    option that does not fit this model or machine)."""


class InputNotFound(OneLineError, FileNotFoundError):
    """A file or folder the user named does not exist."""
