"""Errors a user can act on. The UI shows their message as is, without a traceback."""


class UserError(Exception):
    """A problem with what the user asked for, worded for the user."""


class ModelLoadError(UserError):
    """A model could not be found, fetched or loaded."""


class PathNotAllowedError(ModelLoadError):
    """A local path outside the folders this server is allowed to read."""


class Cancelled(UserError):
    """The user pressed cancel."""

    def __init__(self, what: str = "The job") -> None:
        super().__init__(f"{what} was cancelled.")
