"""ISP network availability monitor."""

__version__ = "0.1.0"
