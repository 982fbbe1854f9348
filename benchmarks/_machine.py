"""Machine description recorded beside every benchmark result (see geolesf.provenance)."""

from __future__ import annotations

from typing import Any


def machine_info() -> dict[str, Any]:
    import torch  # loaded first so that the record includes torch, its threads and CPU capability

    from geolesf.provenance import machine_info as _info

    info = _info()
    info.setdefault("torch", torch.__version__)
    return info
