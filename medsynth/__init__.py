"""medsynth: medical image synthesis with diffusion models and conditional GANs, built on MONAI."""

from importlib.metadata import PackageNotFoundError, version

from medsynth.errors import MedsynthError

try:
    __version__ = version("medsynth")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["MedsynthError", "__version__"]
