"""transfer-harness: few-shot transfer strategies under one protocol on fixed episodes."""

__version__ = "0.1.0"

# Version of the on-disk results layout (records, config.json, environment.json).
RESULTS_SCHEMA_VERSION = 1
