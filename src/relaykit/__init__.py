"""relaykit: let models of different sizes share one generation."""

__version__ = "0.1.0"
