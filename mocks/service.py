"""Start the whole mock outside world on 127.0.0.1: source systems and the receiver.

``start_mocks(config)`` is what ``osms mocks serve`` and the test fixtures call.
It writes, under the state directory, the credentials a pipeline needs:
``tokens.json`` and ``connections.env`` (``AIRFLOW_CONN_*`` lines), both 0600.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mocks.config import MockConfig
from mocks.runner import RunningServer, start_server


@dataclass
class MockServices:
    """The running mocks and how to reach them."""

    config: MockConfig
    sources: RunningServer
    state_corp: RunningServer
    public_key_path: Path
    source_service: Any = field(repr=False)

    @property
    def sources_url(self) -> str:
        return self.sources.url

    @property
    def state_corp_url(self) -> str:
        return self.state_corp.url

    @property
    def tokens(self) -> dict[str, str]:
        return dict(self.config.tokens or {})

    def airflow_env(self) -> dict[str, str]:
        """``AIRFLOW_CONN_*`` variables: one HTTP connection per system, one for the receiver."""
        from mocks.sources import MAX_LIMIT

        env = {}
        port = self.sources.port
        for system, token in sorted(self.tokens.items()):
            # the largest page the mock serves: fewer, larger requests at national scale
            env[f"AIRFLOW_CONN_OSMS_SOURCE_{system.upper()}"] = json.dumps(
                {"conn_type": "http", "host": "127.0.0.1", "port": port, "schema": "http", "password": token,
                 "extra": {"page_size": MAX_LIMIT}}
            )
        env["AIRFLOW_CONN_OSMS_STATE_CORP"] = json.dumps(
            {"conn_type": "http", "host": "127.0.0.1", "port": self.state_corp.port, "schema": "http",
             "password": self.config.receiver_token}
        )
        return env

    def write_credentials(self) -> tuple[Path, Path]:
        """Write tokens.json and connections.env (0600) into the state dir; return their paths."""
        state = self.config.state_dir
        state.mkdir(parents=True, exist_ok=True)
        tokens = state / "tokens.json"
        _write_private(tokens, json.dumps({
            "sources_url": self.sources_url,
            "state_corp_url": self.state_corp_url,
            "systems": self.tokens,
            "admin_token": self.config.admin_token,
            "receiver_token": self.config.receiver_token,
            "public_key": str(self.public_key_path),
        }, indent=2) + "\n")
        env = state / "connections.env"
        _write_private(env, "".join(f"{k}='{v}'\n" for k, v in self.airflow_env().items()))
        return tokens, env

    def stop(self) -> None:
        """Stop both servers."""
        self.sources.stop()
        self.state_corp.stop()

    def __enter__(self) -> MockServices:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def start_mocks(
    config: MockConfig,
    *,
    population: Any = None,
    sources_port: int = 0,
    state_corp_port: int = 0,
    public_key_path: Path | None = None,
    progress: bool = False,
) -> MockServices:
    """Build or load the population, then serve the sources and the receiver on 127.0.0.1."""
    from mocks import state_corp
    from mocks.population import PopulationSpec, load_population
    from mocks.sources import SourceService, create_app
    from osms.core.keys import ensure_dev_keypair

    if population is None:
        population = load_population(PopulationSpec(seed=config.seed, scale=config.scale), config.cache_dir,
                                     progress=progress)
    service = SourceService(population, config)  # fills in missing tokens
    if public_key_path is None:
        _, public_key_path = ensure_dev_keypair()
    receiver = state_corp.create_app(state_corp.StateCorpConfig(
        state_dir=config.state_dir / "state_corp",
        token=config.receiver_token or "",
        admin_token=config.admin_token or "",
        public_key=public_key_path,
        enforce_chain=config.enforce_chain,
    ))
    sources = start_server(create_app(service), sources_port, name="sources")
    try:
        receiver_server = start_server(receiver, state_corp_port, name="state_corp")
    except BaseException:
        sources.stop()
        raise
    return MockServices(config=config, sources=sources, state_corp=receiver_server,
                        public_key_path=public_key_path, source_service=service)
