"""A :class:`harness.protocol.Protocol` for tests that build units, specs or cache keys by hand."""

from __future__ import annotations

from typing import Any

from harness.protocol import Protocol


def protocol(**given: Any) -> Protocol:
    """The default protocol's values (5-way, 15 queries, seed 0, fp32 on a CPU), ``given`` replacing any."""
    values: dict[str, Any] = dict(preset="quick", dataset="test", ways=5, queries=15, episodes=300, seed=0,
                                  replicates=1, precision="fp32", device_type="cpu", data_fingerprint="fp")
    return Protocol(**{**values, **given})
