"""dmmlkd inside Flower: the allocator as a strategy, dmmlkd's learner as a ClientApp.

Needs the optional extra ``dmmlkd[flower]`` (``flwr[simulation]``). Flower's anonymous usage
telemetry is off unless the user turned it on (``FLWR_TELEMETRY_ENABLED``): runs here need no
network.
"""

import os

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # before flwr is imported

from dmmlkd.flower.client import make_client_app  # noqa: E402
from dmmlkd.flower.profile import NodeProfile  # noqa: E402
from dmmlkd.flower.strategy import AllocatorStrategy  # noqa: E402

__all__ = ["AllocatorStrategy", "NodeProfile", "make_client_app"]
