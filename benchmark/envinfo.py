"""What every result records about the machine and the code that produced it."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]

_PACKAGES = ("numpy", "scipy", "scikit-image", "pandas", "torch", "torchvision", "tifffile")


def git_commit(path: Path = REPO_ROOT) -> str | None:
    """``git describe --always --dirty`` of the checkout holding ``path``, or ``None``."""
    try:
        out = subprocess.run(
            ["git", "-C", str(path), "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def distribution_of(module_name: str) -> tuple[str | None, str | None]:
    """``(distribution name, version)`` that provides top-level module ``module_name``."""
    top = module_name.split(".")[0]
    dists = metadata.packages_distributions().get(top, [])
    if not dists:
        return None, None
    return dists[0], package_version(dists[0])


def environment(device: str | None = None) -> dict[str, Any]:
    """Python/platform/package versions, torch/CUDA/GPU and the suite's git commit."""
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "packages": {name: package_version(name) for name in _PACKAGES},
        "suite_version": package_version("nuclei-ssl-bench"),
        "suite_git_commit": git_commit(),
        "device": device,
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda_available"] = torch.cuda.is_available()
        info["cuda_version"] = torch.version.cuda
        if torch.cuda.is_available():
            info["gpu"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:  # pragma: no cover
        info["cuda_available"] = False
    return info
