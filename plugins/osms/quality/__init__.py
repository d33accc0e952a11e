"""Data quality: one Great Expectations suite per category, run by one helper.

This package stays light to import: DAG files may import it at parse time.
Great Expectations and pandas are imported inside the functions of
:mod:`osms.quality.validate`; :mod:`osms.quality.expectations` (the custom
expectations, which must subclass GX classes) is imported only from there.
"""

from __future__ import annotations

__all__ = ["CategoryOutcome", "validate_category", "write_feedback"]


def __getattr__(name: str):  # PEP 562: the names without importing pandas/GX up front
    if name in __all__:
        from osms.quality import validate

        return getattr(validate, name)
    raise AttributeError(name)
