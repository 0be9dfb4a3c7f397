"""`relaykit serve`: an OpenAI-compatible server whose `model` is a relaykit strategy."""

from .app import create_app
from .background import serving

__all__ = ["create_app", "serving"]
