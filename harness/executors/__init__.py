"""Executors run a plan's units of work (harness/units.py) and hand each result to the driver's session
(:class:`harness.executors.base.Session`, harness/session.py), which writes records and caches. Registered
lazily; a third-party executor registers through the ``harness.executors`` entry-point group.

- ``local``: this process, one unit at a time, each source phase just before its first evaluation.
- ``ray``: Ray tasks across the GPUs and machines of a Ray cluster (``pip install -e ".[ray]"``).
"""

from harness.registry import EXECUTORS

EXECUTORS.register_lazy("local", "harness.executors.local:LocalExecutor",
                        description="this process, one unit at a time (default)")
EXECUTORS.register_lazy("ray", "harness.executors.ray_executor:RayExecutor", requires="ray",
                        description="Ray tasks across the GPUs and machines of a cluster (--ray-address)")
