"""safebench: a benchmark suite for safe (constrained) reinforcement learning."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("safebench")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = ["__version__"]
