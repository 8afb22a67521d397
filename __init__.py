"""dmmlkd: resource allocation, learning and sensitivity studies for decentralized multi-modal
learning with knowledge distillation and training balance (DMML-KD) over wireless networks.

Installed, the repository's top-level folders are this package's subpackages (a package-dir
mapping in pyproject.toml): ``dmmlkd.metrics`` and ``dmmlkd.userio`` at the bottom, then
``dmmlkd.allocator`` and ``dmmlkd.learner``, then ``dmmlkd.bridge`` (the learner-allocator
seam), ``dmmlkd.studies``, ``dmmlkd.benchmarks`` and ``dmmlkd.cli`` (the command line).
"""

__version__ = "0.2.0"
