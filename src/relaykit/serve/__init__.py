"""`relaykit serve`: an OpenAI-compatible server whose `model` is a relaykit strategy."""

from .app import create_app

__all__ = ["create_app"]
