"""Errors a user can cause. The CLI and the server print their message, never a traceback."""


class RelaykitError(Exception):
    """A problem with the user's input: a path, a model, a parameter, a request."""
