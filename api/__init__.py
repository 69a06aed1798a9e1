"""HIPNet toolkit: articulated neural signed distance functions of people, and the data pipeline that feeds them.

```python
import hipnet

model = hipnet.load("anny")  # the bundled pretrained model, or a RUN/ckpt.pt
sdf = model.sdf(points, model.example_poses[0], "adult00")
```

The names below are loaded on first use, so the command-line tools start without importing torch.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import TYPE_CHECKING, Any

try:
    __version__ = metadata.version("hipnet-toolkit")
except metadata.PackageNotFoundError:  # run from a checkout that is not installed
    __version__ = "unknown"
__all__ = ["FrameDataset", "Model", "load", "open_store", "pretrained_models"]

if TYPE_CHECKING:
    from hipnet.model.api import FrameDataset, Model, load, open_store, pretrained_models


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("hipnet.model.api"), name)
    raise AttributeError(f"module 'hipnet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
