"""transfer-harness: few-shot transfer strategies under one protocol on fixed episodes."""

__version__ = "0.2.0"
