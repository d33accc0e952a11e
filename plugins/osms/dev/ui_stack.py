"""``make airflow``: the mocks and a whole Airflow on 127.0.0.1, for people to use in a browser.

The same components a production deployment has, on one machine: API server (with
the UI and the Data quality plugin), scheduler with the LocalExecutor, DAG processor
and triggerer (the package DAG's status sensors defer to it), on the embedded SQLite
database under ``<data>/airflow`` (the one ``osms run`` uses, so its runs show too).
The mock source systems and receiver run in this process and are reached through
``AIRFLOW_CONN_*`` connections; the signing key is the development key.

Users of Airflow's simple auth manager, with passwords generated once into
``<data>/airflow/simple_auth_manager_passwords.json`` (0600) and kept, on the manager's
closest roles to the distributed shape's (README's role table says what each may do):

- ``engineer`` (admin): everything, connections and variables included;
- ``operator`` (user): triggers, backfills, clears and marks runs; never connections,
  variables or pools (the manager's ``op`` may edit those);
- ``qa`` (viewer): reads DAGs, runs, logs and the Data quality pages; cannot trigger.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from osms.dev.airflow_local import ALL_COMPONENTS, LocalAirflow

# The simple auth manager's roles are ranks (viewer < user < op < admin); `op` may create, edit and delete
# connections, variables and pools, so the operator is a `user`: DAGs and their runs, nothing more.
USERS = {"engineer": "admin", "operator": "user", "qa": "viewer"}
DEFAULT_PORT = 8080
# Two cores: two task slots. Extracts wait on HTTP, validation is CPU-bound, and the
# embedded SQLite has one writer; the status sensors defer, so they hold no slot.
PARALLELISM = 2


@dataclass
class Stack:
    """A running ``make airflow``: Airflow, the mocks and the data root."""

    airflow: LocalAirflow
    mocks: Any  # mocks.service.MockServices
    data_dir: Path

    @property
    def url(self) -> str:
        return self.airflow.url

    @property
    def data_quality_url(self) -> str:
        from osms.ui.app import URL_ROUTE

        return f"{self.airflow.url}/plugin/{URL_ROUTE}"


def dag_ids() -> list[str]:
    """Every DAG of the project: one per body of any edition, and the package DAG."""
    from osms.orchestration.package_dag import DAG_ID
    from osms.core.registry import default_registry

    bodies = sorted({b.dag_id for e in default_registry().editions for b in e.bodies})
    return [*bodies, DAG_ID]


def stack_airflow(data_dir: Path, mocks: Any, *, port: int = 0, use_job_schedule: bool = True) -> LocalAirflow:
    """``make airflow``'s Airflow, not started: the embedded shape, the mocks' connections, the development key."""
    from osms.dev.local_run import signing_env

    return LocalAirflow(
        Path(data_dir) / "airflow",
        extra_env={
            **mocks.airflow_env(),
            **signing_env(),
            "OSMS_DATA_DIR": str(data_dir),
            "OSMS_SIGNING_PUBLIC_KEY": str(mocks.public_key_path),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(PARALLELISM),
        },
        parallelism=PARALLELISM,
        port=port,
        use_job_schedule=use_job_schedule,
        users=dict(USERS),
        api_user="engineer",
    )


@contextlib.contextmanager
def airflow_stack(data_dir: Path, *, port: int = DEFAULT_PORT, use_job_schedule: bool = True,
                  mock_config: Any = None, say: Callable[[str], None] = print,
                  start_timeout: float = 180) -> Iterator[Stack]:
    """Start the mocks and Airflow, unpause every DAG, yield; stop everything on the way out.

    ``use_job_schedule=False`` keeps the scheduler from creating scheduled runs (tests that
    want only their own runs); backfills, manual runs and deferred tasks still run.
    """
    from mocks.config import MockConfig
    from mocks.service import start_mocks

    from osms.core import layout

    data_dir = Path(data_dir).resolve()
    layout.lineage(data_dir).mkdir(parents=True, exist_ok=True)  # the lineage file transport writes there
    config = mock_config or MockConfig(data_dir=data_dir / "mocks")
    say("starting the mock source systems and State Corporation on 127.0.0.1 ...")
    with start_mocks(config, progress=True) as mocks:
        say(f"  sources {mocks.sources_url}, receiver {mocks.state_corp_url}")
        af = stack_airflow(data_dir, mocks, port=port, use_job_schedule=use_job_schedule)
        say("starting Airflow (db migrate, pools, API server, scheduler, DAG processor, triggerer) ...")
        try:
            af.start(ALL_COMPONENTS, timeout=start_timeout)
            for dag_id in dag_ids():
                dag = af.wait_for_dag(dag_id, timeout=start_timeout)
                # an operator's backfill never runs on a paused DAG: every DAG is on (new DAGs are created on;
                # one paused in an earlier session of this data dir is turned on again)
                if dag.get("is_paused", True):
                    af.api("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False}, retry_for=start_timeout)
            yield Stack(airflow=af, mocks=mocks, data_dir=data_dir)
        finally:
            af.stop()


def serve(data_dir: Path, *, port: int = DEFAULT_PORT, say: Callable[[str], None] = print) -> None:
    """``make airflow``: start, print where to go and who can log in, run until Ctrl-C."""
    from osms.dev.stopping import StopSignals

    # Ctrl-C while starting: the start completes, then everything stops
    with StopSignals() as stop, airflow_stack(data_dir, port=port, say=say) as stack:
        af = stack.airflow
        say("")
        say(f"Airflow is up: {stack.url}")
        say(f"  Data quality: {stack.data_quality_url}")
        say("  users: " + ", ".join(f"{u} ({r})" for u, r in USERS.items()))
        say(f"  passwords: {af.passwords_file}   (generated once; `cat` it, keep it private)")
        say(f"  component logs: {af.log_dir}")
        say("Press Ctrl-C to stop.")
        while not stop.wait(5):
            af.check_alive()
        say("stopping ...")
