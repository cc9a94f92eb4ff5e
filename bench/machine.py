"""What a recorded result was measured on: the machine and the code (every benchmark records it)."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from feature_store.settings import PROJECT_ROOT


def machine() -> dict[str, Any]:
    """Cores, CPU model, memory, architecture, Python and the git commit (`+dirty` with uncommitted changes)."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())  # fmt: skip
    mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=PROJECT_ROOT).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, cwd=PROJECT_ROOT).stdout.strip()
    return {"cores": os.cpu_count(), "cpu": model, "memory_gb": round(mem / 1024**2, 1), "arch": platform.machine(),
            "python": platform.python_version(), "git": commit + ("+dirty" if dirty else "")}  # fmt: skip
