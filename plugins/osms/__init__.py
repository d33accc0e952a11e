"""The OSMS pipeline library: registry, IIN checks, extract, quality, package, delivery."""

__version__ = "0.1.0"
