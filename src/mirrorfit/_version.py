"""The package version, in one place (read by checkpoint headers too)."""

__version__ = "0.1.0"
