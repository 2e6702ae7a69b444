"""The package version (one place: `jaxland.__version__` and `jaxland --version` read it)."""

VERSION = "0.1.0"
