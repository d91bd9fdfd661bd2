"""User-facing errors.

Every problem caused by the user's input (a bad file, an unknown name, a wrong shape) is raised as
:class:`MclnfError` with a one-line message that names the file, field or value and says what was
expected. Entry points print ``error: <message>`` and exit with status 2 instead of a traceback.
"""


class MclnfError(Exception):
    """A problem with the user's input or configuration, explained in one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))
