"""Fixtures that start real servers on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mocks.config import MockConfig
from mocks.defects import DefectRates
from mocks.service import MockServices, start_mocks


@pytest.fixture(scope="session")
def population_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One population cache for the whole session: built once, loaded by every mock started."""
    return tmp_path_factory.mktemp("population")


@pytest.fixture(scope="session")
def signing_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from osms.core.keys import ensure_dev_keypair

    return ensure_dev_keypair(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def start(tmp_path: Path, population_cache: Path, signing_keys: tuple[Path, Path]) -> Iterator:
    """Start mocks with a given config (data under tmp_path, shared population cache); stopped after the test."""
    started: list[MockServices] = []

    def _start(**settings) -> MockServices:
        cfg = MockConfig(data_dir=tmp_path / f"mocks{len(started)}", **settings)
        from mocks.population import PopulationSpec, load_population

        population = load_population(PopulationSpec(seed=cfg.seed, scale=cfg.scale), population_cache)
        services = start_mocks(cfg, population=population, public_key_path=signing_keys[1])
        started.append(services)
        return services

    yield _start
    for s in started:
        s.stop()


@pytest.fixture
def clean_mocks(start) -> MockServices:
    """Mocks serving clean data (no defects, no faults)."""
    return start(defects=DefectRates.none())
