"""The decree as data: editions of the list annexed to Decree No. 660, with their
bodies, information systems, categories of persons and feeds.

The seeds in ``include/seeds/`` are parsed into immutable typed models. Loading
checks every reference and refuses an inconsistent registry with a
:class:`RegistryError` that names the file and the entry at fault, so a typo in a
seed can never reach a DAG.

This module is the registry's front: where it is found and loaded, once per process. The models live in
:mod:`osms.core.registry_models`, the reading and checking of the seeds in :mod:`osms.core.registry_seeds`;
every public name of both is importable from here.
"""

from __future__ import annotations

import functools
from pathlib import Path

from osms.core import settings
from osms.core.registry_models import (
    Body,
    Category,
    Column,
    ColumnType,
    Decree,
    Edition,
    EditionCategory,
    Feed,
    Funding,
    NoEditionInForce,
    Registry,
    RegistryError,
    System,
    arrow_type,
)
from osms.core.registry_seeds import read_seeds

__all__ = [
    "Body",
    "Category",
    "Column",
    "ColumnType",
    "Decree",
    "Edition",
    "EditionCategory",
    "Feed",
    "Funding",
    "NoEditionInForce",
    "Registry",
    "RegistryError",
    "System",
    "arrow_type",
    "default_registry",
    "default_seed_dir",
    "registry_in",
    "load_registry",
]


CHECKOUT_SEEDS = Path(__file__).resolve().parents[3] / "include" / "seeds"


def default_seed_dir() -> Path:
    """``include/seeds`` of this checkout, or ``$OSMS_SEED_DIR`` when set."""
    return settings.current().seed_dir or CHECKOUT_SEEDS


@functools.lru_cache(maxsize=4)
def _cached(seed_dir: str) -> Registry:
    return load_registry(Path(seed_dir))


def default_registry() -> Registry:
    """The project's registry, loaded once per process."""
    return _cached(str(default_seed_dir()))


def registry_in(seed_dir: Path | None) -> Registry:
    """The registry of ``seed_dir`` (None: this checkout's include/seeds), loaded once per process."""
    return _cached(str(seed_dir or CHECKOUT_SEEDS))


def load_registry(seed_dir: Path | str | None = None) -> Registry:
    """Parse and check the seeds in ``seed_dir``; :class:`RegistryError` if inconsistent."""
    seed_dir = Path(seed_dir) if seed_dir is not None else default_seed_dir()
    editions, common = read_seeds(seed_dir)
    return Registry(editions=editions, common_columns=common, source_dir=seed_dir)
