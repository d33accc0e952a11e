"""What one task of one day works with, built once and passed into every stage.

The orchestration layer (a task of a DAG, ``osms run``, a benchmark, a test) builds a :class:`Run` for the
day it works on, from the settings read once (:mod:`osms.core.settings`); the stages (``osms.sources``,
``osms.quality``, ``osms.package``) take it and never look anything up themselves: not the environment,
not the data dir, not the registry, not the memory budget, and they spell no path
(``tests/unit/test_code_shape.py`` holds that). A signature then says what a stage depends on, and a test
gives a stage its own root, edition or budget by building its own Run.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from pathlib import Path

from osms.core.budget import Budget
from osms.core.layout import Paths
from osms.core.registry_models import Edition, Registry
from osms.core.settings import Settings

__all__ = ["CHECKOUT_EXPECTATIONS", "Run"]

CHECKOUT_EXPECTATIONS = Path(__file__).resolve().parents[3] / "expectations"


@dataclass(frozen=True)
class Run:
    """The day, where its data lives, the decree's edition in force that day, the memory budget."""

    day: dt.date
    paths: Paths
    registry: Registry
    edition: Edition
    budget: Budget
    expectations_dir: Path  # the GX suites: expectations/ of this checkout, or $OSMS_EXPECTATIONS_DIR

    @classmethod
    def of(cls, day: dt.date, *, data_dir: Path | str | None = None, registry: Registry | None = None,
           budget: Budget | None = None, settings: Settings | None = None) -> Run:
        """The Run of ``day``: what is not given comes from the settings (``$OSMS_*``), read once here.

        Raises :class:`osms.core.registry.NoEditionInForce` when no edition of the decree is in force on ``day``.
        """
        if settings is None:
            from osms.core import settings as settings_module

            settings = settings_module.current()
        if registry is None:
            from osms.core.registry import registry_in

            registry = registry_in(settings.seed_dir)
        root = Path(data_dir) if data_dir is not None else settings.data_dir
        if budget is None:
            total = settings.memory_budget
            budget = Budget(total) if total is not None else Budget()
        return cls(day=day, paths=Paths(root.resolve()), registry=registry, edition=registry.edition_on(day),
                   budget=budget, expectations_dir=settings.expectations_dir or CHECKOUT_EXPECTATIONS)

    @property
    def root(self) -> Path:
        """The working data root."""
        return self.paths.root

    @property
    def earliest(self) -> dt.date:
        """The first day of the decree's earliest edition: no package or status is looked for before it."""
        return min(e.effective_from for e in self.registry.editions)

    def on(self, day: dt.date) -> Run:
        """The same root, registry and budget, for another day (and the edition in force on it)."""
        return replace(self, day=day, edition=self.registry.edition_on(day))
