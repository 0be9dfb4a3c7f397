"""Errors a user can cause. The CLI and the server print their message, never a traceback."""


class RelaykitError(Exception):
    """A problem with the user's input: a path, a model, a parameter, a request."""


class OptionError(RelaykitError):
    """A strategy's or KV policy's option is unknown or has a bad value."""
