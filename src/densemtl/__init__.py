"""densemtl: a PyTorch Lightning + Hydra suite for multi-task dense prediction."""

import os as _os

# Offline first (DESIGN principle 6): nothing reaches a model hub or checks for updates on import.
_os.environ.setdefault("HF_HUB_OFFLINE", "1")
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
