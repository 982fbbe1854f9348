"""Where and with what a result was produced: recorded in run folders and benchmark JSON."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """CPU model, threads, Python and library versions (torch only if it is already imported)."""
    import numpy as np

    from geolesf import __version__

    info: dict[str, Any] = {
        "geolesf": __version__,
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "logical_cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        info.update(torch=torch.__version__, threads=torch.get_num_threads(),
                    cpu_capability=torch.backends.cpu.get_cpu_capability(),
                    cuda=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    sklearn = sys.modules.get("sklearn")
    if sklearn is not None:
        info["sklearn"] = sklearn.__version__
    return info
