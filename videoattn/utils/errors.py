"""The base class of errors whose message is written for the user as is (one line, no traceback)."""


class OneLineError(RuntimeError):
    """The tools print ``error: <message>`` and exit with status 1 (see ``videoattn.cli``)."""
