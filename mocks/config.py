"""Configuration of the mock outside world: population, defects, faults, credentials.

Given as a YAML file (``osms mocks serve --config FILE``) or built in code by
tests. Example::

    seed: 660
    scale: 0.001
    data_dir: data/mocks
    defects:                  # every feed, unless overridden below
      bad_check_digit: 0.001
    feed_defects:             # per feed: "<system>.<category>"
      payments.pregnant: {category_rule: 0.01}
    faults:                   # per system
      payments: {error_rate: 0.1, rate_limit_rate: 0.05}
      penal_db: {volume_drop: 0.5}
    day_faults:               # per as_of day, then per system: replace that system's faults for that day only
      "2025-06-02": {egov_portal: {down: true}}
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mocks.defects import DefectRates
from mocks.faults import SystemFaults

# The window the mocks serve: from the first edition of the registry to the end of 2027.
FIRST_DAY = dt.date(2022, 9, 26)
LAST_DAY = dt.date(2027, 12, 31)


@dataclass
class MockConfig:
    """Everything that decides what the mocks serve and how they misbehave."""

    seed: int = 660
    scale: float = 0.001
    data_dir: Path = Path("data/mocks")
    defects: DefectRates = field(default_factory=DefectRates)
    feed_defects: dict[str, DefectRates] = field(default_factory=dict)
    faults: dict[str, SystemFaults] = field(default_factory=dict)
    # faults keyed to the day asked for (as_of), so a plan holds whenever the request comes (make soak)
    day_faults: dict[dt.date, dict[str, SystemFaults]] = field(default_factory=dict)
    tokens: dict[str, str] | None = None  # per system; generated when None
    admin_token: str | None = None
    receiver_token: str | None = None
    enforce_chain: bool = True

    @property
    def cache_dir(self) -> Path:
        """Where built populations are cached (shared by every run with the same seed and scale)."""
        return self.data_dir / "population"

    @property
    def state_dir(self) -> Path:
        """Where the receiver keeps packages, and where tokens and env files are written."""
        return self.data_dir / "state"

    def rates_for(self, system: str, category: str) -> DefectRates:
        """The defect rates of one feed."""
        return self.feed_defects.get(f"{system}.{category}", self.defects)

    def faults_for(self, system: str) -> SystemFaults:
        """The faults of one system."""
        return self.faults.get(system, SystemFaults())

    def with_credentials(self, systems: list[str]) -> MockConfig:
        """Fill in any missing token with a fresh random one."""
        tokens = dict(self.tokens or {})
        for s in systems:
            tokens.setdefault(s, secrets.token_urlsafe(24))
        self.tokens = tokens
        self.admin_token = self.admin_token or secrets.token_urlsafe(24)
        self.receiver_token = self.receiver_token or secrets.token_urlsafe(24)
        return self

    @classmethod
    def from_yaml(cls, path: Path) -> MockConfig:
        """Read a config file; unknown keys are refused by name."""
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return cls.from_mapping(raw, where=str(path))

    @classmethod
    def from_mapping(cls, raw: dict[str, Any], where: str = "config") -> MockConfig:
        """Build from plain data (a parsed YAML file)."""
        known = {"seed", "scale", "data_dir", "defects", "feed_defects", "faults", "day_faults", "enforce_chain"}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
        try:
            base = DefectRates.from_mapping(raw.get("defects") or {})
            return cls(
                seed=int(raw.get("seed", 660)),
                scale=float(raw.get("scale", 0.001)),
                data_dir=Path(raw.get("data_dir", "data/mocks")),
                defects=base,
                feed_defects={k: DefectRates.from_mapping(v, base) for k, v in (raw.get("feed_defects") or {}).items()},
                faults={k: SystemFaults.from_mapping(v) for k, v in (raw.get("faults") or {}).items()},
                day_faults={dt.date.fromisoformat(str(day)): {k: SystemFaults.from_mapping(v)
                                                              for k, v in systems.items()}
                            for day, systems in (raw.get("day_faults") or {}).items()},
                enforce_chain=bool(raw.get("enforce_chain", True)),
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from None
