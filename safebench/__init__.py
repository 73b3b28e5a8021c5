"""safebench: a benchmark suite for safe (constrained) reinforcement learning."""

import contextlib
import io
from importlib.metadata import PackageNotFoundError, version

with contextlib.redirect_stderr(io.StringIO()):
    # gymnasium loads its plugins (gymnasium-robotics) at import, and farama-notifications then
    # prints a notice about Adroit envs to stderr; safebench never uses those envs. Importing
    # gymnasium here, first, keeps every entry point into safebench quiet.
    import gymnasium  # noqa: F401

try:
    __version__ = version("safebench")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = ["__version__"]
