"""The bounds flags are checked against, so that an absurd value is one line, not an allocation that fails
deep inside torch or numpy (``--batch 1000000000`` asked for 12 TB). Torch-free.

``MAX_BATCH``: a batch of 4096 ImageNet images is 2.5 GB of float32 input alone; ``MAX_CLASSES``: ImageNet-21k
has 21,843 classes, and 100,000 classes behind ResNet-50's 2048 features are 0.8 GB of classifier;
``MAX_SEED``: the seeds torch and numpy both take (non-negative, 63 bits).
"""

from __future__ import annotations

MAX_BATCH = 4096
MAX_CLASSES = 100_000
MAX_SEED = 2**63 - 1

__all__ = ["MAX_BATCH", "MAX_CLASSES", "MAX_SEED"]
