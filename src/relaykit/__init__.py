"""relaykit: let models of different sizes share one generation."""

__version__ = "0.1.0"
__all__ = ["Session"]


def __getattr__(name: str):
    """`relaykit.Session`, imported on first use (the package itself stays light to import)."""
    if name == "Session":
        from .runtime.session import Session

        return Session
    raise AttributeError(f"module 'relaykit' has no attribute {name!r}")
