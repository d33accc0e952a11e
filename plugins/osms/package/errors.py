"""Why a package is not built: the errors of the build and of its gate (a module of their own, so that the gate
can raise them without importing the build)."""

from __future__ import annotations

__all__ = ["PackageError", "PackageGateError"]


class PackageError(RuntimeError):
    """A package cannot be built or would change a delivered one; the message says why."""


class PackageGateError(PackageError):
    """The package suite failed: no package is written."""
