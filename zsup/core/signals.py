"""Signal names and numbers as users write them: kept for the core's importers; the parsers
live with the protocol (zsup/bus/parse.py)."""

from zsup.bus.parse import parse_signal, signal_name

__all__ = ["parse_signal", "signal_name"]
