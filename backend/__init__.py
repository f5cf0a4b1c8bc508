"""CinePreGen backend: shot bundles in, generated previs clips out."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cinepregen")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"
