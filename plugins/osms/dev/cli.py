"""The ``osms`` command: look at the registry, check IINs, run the daily job."""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import TYPE_CHECKING, Any

import click

from osms.core.dates import yesterday_in_almaty
from osms.core.registry import Edition, NoEditionInForce, RegistryError, default_registry

if TYPE_CHECKING:
    from pathlib import Path

    from osms.core.documents import QualityDocument


class _Date(click.ParamType):
    name = "YYYY-MM-DD"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> dt.date:
        if isinstance(value, dt.date):
            return value
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            self.fail(f"{value!r} is not a date of the form YYYY-MM-DD", param, ctx)


DATE = _Date()


def _edition_or_exit(day: dt.date) -> tuple[Any, Edition]:
    try:
        registry = default_registry()
    except RegistryError as exc:
        raise click.ClickException(f"the registry is inconsistent: {exc}") from None
    try:
        return registry, registry.edition_on(day)
    except NoEditionInForce as exc:
        raise click.ClickException(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="osms-pipeline", prog_name="osms")
def main() -> None:
    """OSMS data feeds under Decree No. 660: registry, checks and the daily run."""


# --------------------------------------------------------------------------- registry


@main.group()
def registry() -> None:
    """The decree as data: editions, bodies, systems, categories, feeds."""


@registry.command("show")
@click.option("--date", "day", type=DATE, required=True, help="Show the edition in force on this date.")
@click.option("--json", "as_json", is_flag=True, help="Print the stable JSON form (see README).")
def registry_show(day: dt.date, as_json: bool) -> None:
    """Print the edition of the decree in force on a date."""
    reg, edition = _edition_or_exit(day)
    if as_json:
        click.echo(json.dumps(reg.describe(day), ensure_ascii=False, indent=2))
        return
    _print_edition(day, edition)


def _print_edition(day: dt.date, e: Edition) -> None:
    flag = "  [PROVISIONAL]" if e.provisional else ""
    to = e.effective_to.isoformat() if e.effective_to else "open-ended"
    click.echo(f"Decree No. 660 on {day.isoformat()}: edition {e.code}{flag}")
    click.echo(f"  by Decree No. {e.decree.number} of {e.decree.date.isoformat()}, in force {e.effective_from.isoformat()} .. {to}")
    click.echo(
        f"  {len(e.bodies)} bodies, {len(e.systems)} systems, {len(e.categories)} categories, {len(e.feeds)} feeds"
    )
    if e.provisional:
        click.echo(click.wrap_text(e.source, initial_indent="  source: ", subsequent_indent="          "))
    click.echo("\nCategories (row, code, funding):")
    for c in e.categories:
        mark = "  [provisional]" if c.provisional else ""
        click.echo(f"  {c.row:>2}  {c.code:<22} {c.funding:<18} {c.category.name_en[:70]}{mark}")
    click.echo("\nBodies and their feeds (system -> category [row]):")
    for b in e.bodies:
        feeds = e.feeds_of(b.code)
        click.echo(f"  {b.code:<14} {b.name_en}  (DAG {b.dag_id}, {len(feeds)} feeds)")
        for f in feeds:
            click.echo(f"      {f.system:<20} -> {f.category} [{f.row}]")
    click.echo("\nSystems:")
    for s in e.systems:
        mark = "  [provisional]" if s.provisional else ""
        click.echo(f"  {s.code:<20} {s.name_en}{mark}")


# --------------------------------------------------------------------------- iin


@main.group()
def iin() -> None:
    """Individual identification numbers."""


@iin.command("check")
@click.argument("values", nargs=-1, required=True)
def iin_check(values: tuple[str, ...]) -> None:
    """Say whether each VALUE is a valid IIN, and why not; exit 1 if any is not."""
    from osms.core import iin as iin_lib

    result = iin_lib.check(list(values))
    width = max(len(v) for v in values)
    for value, reason, birth, sex in zip(values, result.reason, result.birth_date, result.sex, strict=True):
        r = iin_lib.Reason(int(reason))
        if r is iin_lib.Reason.OK:
            decoded = f" (digits give birth date {birth}, sex {sex})" if sex else ""
            click.echo(f"{value:<{width}}  valid{decoded}")
        elif r is iin_lib.Reason.FORMAT:
            click.echo(f"{value:<{width}}  invalid: format: {_format_problem(value)}")
        else:
            click.echo(f"{value:<{width}}  invalid: {r.text}")
    sys.exit(0 if bool(result.valid.all()) else 1)


def _format_problem(value: str) -> str:
    if len(value) != 12:
        return f"{len(value)} characters, an IIN is 12 digits"
    return "a character other than a digit, an IIN is 12 digits"


# --------------------------------------------------------------------------- mocks


@main.group()
def mocks() -> None:
    """The simulated outside world: source systems and the State Corporation, on 127.0.0.1."""


def _mock_config(config_file: str | None, seed: int | None, scale: float | None, data_dir: str | None) -> Any:
    from pathlib import Path

    from mocks.config import MockConfig

    try:
        cfg = MockConfig.from_yaml(Path(config_file)) if config_file else MockConfig()
    except (OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    if seed is not None:
        cfg.seed = seed
    if scale is not None:
        if not 0 < scale <= 1.5:
            raise click.BadParameter("scale is a share of the real country, 0 < scale <= 1.5", param_hint="--scale")
        cfg.scale = scale
    if data_dir is not None:
        cfg.data_dir = Path(data_dir) / "mocks"
    return cfg


_mock_options = [
    click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), help="Mock config (YAML)."),
    click.option("--seed", type=int, default=None, help="Population seed (default 660)."),
    click.option("--scale", type=float, default=None, help="Share of the real population (1.0 = 20.3 M; default 0.001)."),
    click.option("--data-dir", default=None, help="Data root (default ./data); the mocks use <data-dir>/mocks."),
]


def _with_mock_options(fn: Any) -> Any:
    for option in reversed(_mock_options):
        fn = option(fn)
    return fn


@mocks.command("serve")
@_with_mock_options
@click.option("--sources-port", type=int, default=0, help="Port of the source systems (default: a free one).")
@click.option("--state-corp-port", type=int, default=0, help="Port of the receiver (default: a free one).")
def mocks_serve(config_file: str | None, seed: int | None, scale: float | None, data_dir: str | None,
                sources_port: int, state_corp_port: int) -> None:
    """Serve the mock source systems and State Corporation on 127.0.0.1 until Ctrl-C."""
    from mocks.service import start_mocks
    from osms.dev.stopping import StopSignals

    cfg = _mock_config(config_file, seed, scale, data_dir)
    click.echo(f"population: seed {cfg.seed}, scale {cfg.scale} (cache: {cfg.cache_dir})", err=True)
    services = start_mocks(cfg, sources_port=sources_port, state_corp_port=state_corp_port, progress=True)
    tokens, env = services.write_credentials()
    click.echo(f"source systems:    {services.sources_url}/v1/systems/<system>/records")
    click.echo(f"State Corporation: {services.state_corp_url}/v1/packages")
    click.echo(f"tokens:            {tokens}")
    click.echo(f"Airflow env:       {env}  (set -a; . {env}; set +a)")
    click.echo(f"receiver key:      {services.public_key_path}")
    click.echo("Ctrl-C stops both.")
    with StopSignals() as stop:  # still recording while stopping: a second Ctrl-C cannot cut the stop short
        stop.wait()
        services.stop()
    click.echo("stopped.", err=True)


@mocks.command("ground-truth")
@_with_mock_options
@click.option("--date", "day", type=DATE, required=True, help="The as-of date.")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Parquet file to write.")
def mocks_ground_truth(config_file: str | None, seed: int | None, scale: float | None, data_dir: str | None,
                       day: dt.date, out: str) -> None:
    """Write which served records carry which injected defect on a date (all feeds)."""
    from pathlib import Path

    from mocks.defects import summarise
    from mocks.population import PopulationSpec, load_population
    from mocks.sources import SourceService
    from osms.core.files import write_parquet_atomic

    cfg = _mock_config(config_file, seed, scale, data_dir)
    population = load_population(PopulationSpec(seed=cfg.seed, scale=cfg.scale), cfg.cache_dir, progress=True)
    truth = SourceService(population, cfg).all_ground_truth(day)
    write_parquet_atomic(truth, Path(out))
    click.echo(f"{truth.num_rows} defective records on {day.isoformat()} -> {out}")
    for kind, count in summarise(truth).items():
        click.echo(f"  {kind:<26} {count}")


# --------------------------------------------------------------------------- package


@main.group()
def package() -> None:
    """The consolidated daily package."""


@package.command("verify")
@click.argument("package_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--public-key", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Ed25519 public key (PEM); default: the development key.")
@click.option("--previous", type=click.Path(exists=True, file_okay=False), default=None,
              help="The previous package's directory, to check the chain link (default: found beside it).")
def package_verify(package_dir: str, public_key: str | None, previous: str | None) -> None:
    """Check every checksum, the signature and the chain link of a package; name what is wrong."""
    from pathlib import Path

    from osms.core.documents import MANIFEST
    from osms.core.keys import ensure_dev_keypair
    from osms.package.build import verify_package

    key_path = Path(public_key) if public_key else ensure_dev_keypair()[1]
    problems = verify_package(Path(package_dir), key_path.read_bytes(),
                              previous_manifest=Path(previous) / MANIFEST if previous else None)
    if problems:
        for p in problems:
            click.echo(f"FAIL {p}")
        sys.exit(1)
    click.echo(f"OK {package_dir}: checksums, signature and chain link verified")


@main.group()
def chain() -> None:
    """The delivery chain: where it starts."""


@chain.command("start")
@click.option("--date", "day", type=DATE, default=None, help="Write this day as the chain's first (once).")
@click.option("--data-dir", envvar="OSMS_DATA_DIR", default="data", show_default=True, help="Working data root.")
def chain_start_command(day: dt.date | None, data_dir: str) -> None:
    """Show the delivery chain's start, or write it once with --date (no package is built before it)."""
    from pathlib import Path

    from osms.package.chain import ChainBroken, ChainStartConflict, chain_start, set_chain_start

    root = Path(data_dir).resolve()
    try:
        start = set_chain_start(root, day, set_by="osms chain start", strict=True) if day else chain_start(root)
    except (ChainStartConflict, ChainBroken) as exc:
        raise click.ClickException(str(exc)) from None
    if start is None:
        click.echo(f"the delivery chain in {root} has no start yet: the first scheduled or backfill run of the"
                   " package DAG (or osms run) writes it")
        sys.exit(1)
    click.echo(f"the delivery chain starts at {start.start} (set by {start.set_by} at {start.set_at})")


# --------------------------------------------------------------------------- run


# Exit codes of ``osms run`` (the README lists them): a cron job or a CI wrapper can tell what happened.
EXIT_DELIVERED = 0  # every DAG succeeded and the day's package has a receipt
EXIT_DAG_FAILED = 3  # the package was delivered, but a DAG run failed (a body's data is carried forward)
EXIT_NOT_DELIVERED = 4  # no receipt for the day's package


@main.command("run")
@click.option("--date", "day", type=DATE, default=None, help="Logical date (default: yesterday in Asia/Almaty).")
@click.option("--data-dir", default="data", show_default=True, help="Working data root.")
@click.option("--scale", type=float, default=None,
              help="Share of the real country the mocks serve (1.0 = 20.3 M persons; default 0.001).")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="Airflow worker processes running DAGs side by side (default: the machine's cores).")
@click.option("--mocks-config", "mocks_config", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Mock config (YAML: seed, scale, defects, faults), e.g. to see how a fault is handled.")
def run(day: dt.date | None, data_dir: str, scale: float | None, workers: int | None,
        mocks_config: str | None) -> None:
    """Run the daily job for a date: mocks, 8 agency DAGs and the package DAG on embedded SQLite.

    Exit status: 0 delivered and every DAG succeeded; 3 delivered, but a DAG run
    failed; 4 nothing delivered for the date.
    """
    import logging
    import time
    from pathlib import Path

    from mocks.config import MockConfig
    from mocks.service import start_mocks
    from osms.core import layout
    from osms.core.documents import QUALITY, RECEIPT, QualityDocument, Receipt
    from osms.dev.local_run import (
        DagWorkers,
        airflow_env,
        default_workers,
        run_day_dags,
        signing_env,
        start_migrate,
        wait_migrate,
    )

    day = day or yesterday_in_almaty()
    _, edition = _edition_or_exit(day)
    root = Path(data_dir).resolve()
    cfg = _mock_config(mocks_config, None, scale, str(root))
    click.echo(
        f"osms run for {day.isoformat()}: edition {edition.code}{' (provisional)' if edition.provisional else ''},"
        f" {len(edition.bodies)} bodies, {len(edition.feeds)} feeds; data in {root}"
    )
    logging.getLogger("mocks").setLevel(logging.WARNING)  # the receiver's own log is in its state dir
    # The metadata database is migrated while the population loads: neither waits for the other.
    migrating = start_migrate(airflow_env(root, signing_env()))
    click.echo(f"starting the mock source systems and State Corporation on 127.0.0.1 (scale {cfg.scale}) ...")
    with start_mocks(cfg, progress=True) as services:
        click.echo(f"  sources {services.sources_url}, receiver {services.state_corp_url}")
        env = airflow_env(root, {**services.airflow_env(), **signing_env()})
        # the workers load Airflow and the pipeline's libraries while the database migrates
        pool = DagWorkers(env, workers or default_workers())
        click.echo("preparing the embedded Airflow metadata database (SQLite) ...")
        try:
            wait_migrate(migrating)
        except BaseException:
            pool.close()
            raise
        click.echo(f"running the DAGs for {day.isoformat()} (logs in {root / 'airflow' / 'logs' / f'run-{day}'}):")
        started = time.perf_counter()
        with pool:
            results, statuses = run_day_dags(day, root, env, pool=pool, say=click.echo)
        click.echo(f"  all DAGs in {time.perf_counter() - started:,.0f} s")
    package = layout.package_dir(root, day)
    _print_summary(edition, statuses, _document(package / QUALITY, QualityDocument))
    _print_costs(root, day)
    receipt = _document(package / RECEIPT, Receipt)
    if receipt is not None:
        click.echo(f"\npackage {package}\nreceipt {receipt.receipt_id} (received {receipt.received_at})")
    elif not (package / RECEIPT).exists():
        click.echo(f"\nno package was delivered for {day.isoformat()}")
    failed = [r.dag_id for r in results if not r.ok]
    if failed:
        click.echo(f"\nruns that did not succeed: {', '.join(failed)} (the statuses above and the logs say why).")
    if not (package / RECEIPT).exists():
        sys.exit(EXIT_NOT_DELIVERED)
    if failed:
        sys.exit(EXIT_DAG_FAILED)


def _document(path: Path, model: Any) -> Any:
    """A document of the run through its model; None when absent, or when it does not read (said on stderr)."""
    from osms.core.documents import DocumentError

    try:
        return model.parse(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, DocumentError) as exc:
        click.echo(f"{path} is unreadable: {exc}", err=True)
        return None


def _print_costs(root: Any, day: dt.date) -> None:
    """The costliest tasks of the run (wall, CPU, peak memory), from the task metrics."""
    from osms.orchestration.task_metrics import read_metrics

    metrics = [m for m in read_metrics(root, day.isoformat()) if m.get("peak_rss_bytes")]
    if not metrics:
        return
    top = sorted(metrics, key=lambda m: -m["wall_seconds"])[:5]
    peak = max(metrics, key=lambda m: m["peak_rss_bytes"])
    click.echo("\nCostliest tasks (wall, CPU, peak memory of the task's process):")
    for m in top:
        click.echo(f"  {m['dag_id'] + '.' + m['task_id']:<52} {m['wall_seconds']:>7.1f} s {m['cpu_seconds']:>7.1f} s"
                   f" {m['peak_rss_bytes'] / 2**20:>7,.0f} MiB")
    click.echo(f"  highest peak: {peak['peak_rss_bytes'] / 2**20:,.0f} MiB ({peak['dag_id']}.{peak['task_id']})")


@main.command("airflow")
@click.option("--data-dir", default="data", show_default=True, help="Working data root.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535),
              help="Port of the API server and UI on 127.0.0.1.")
def airflow_ui(data_dir: str, port: int) -> None:
    """Run the mocks and Airflow (UI, scheduler, DAG processor, triggerer) on 127.0.0.1 until Ctrl-C."""
    import errno
    import logging
    import socket
    from pathlib import Path

    from osms.dev.ui_stack import serve

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            click.echo(f"port {port} on 127.0.0.1 is in use; choose another: make airflow PORT=8081", err=True)
            sys.exit(2)
    logging.getLogger("mocks").setLevel(logging.WARNING)
    serve(Path(data_dir), port=port, say=click.echo)


# --------------------------------------------------------------------------- distributed


def _port_free_or_exit(port: int, hint: str) -> None:
    """Exit 2 naming the port when something already listens on 127.0.0.1:port."""
    import errno
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            click.echo(f"port {port} on 127.0.0.1 is in use; choose another: {hint}", err=True)
            sys.exit(2)


@main.command("cluster")
@click.option("--data-dir", default="data", show_default=True, help="Working data root (the cluster's state in <data>/cluster).")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535),
              help="Port of the API server and UI on 127.0.0.1.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 16), help="Celery workers.")
@click.option("--prometheus-port", default=9090, show_default=True, type=click.IntRange(1, 65535),
              help="Port of Prometheus on 127.0.0.1.")
@click.option("--lineage-url", envvar="OSMS_LINEAGE_URL", default=None,
              help="An OpenLineage server (e.g. Marquez) to send every task's lineage to over HTTP (default: none).")
def cluster(data_dir: str, port: int, workers: int, prometheus_port: int, lineage_url: str | None) -> None:
    """Run the distributed shape natively until Ctrl-C: PostgreSQL, Redis, mocks, Airflow with Celery workers,
    Prometheus."""
    import logging
    from pathlib import Path

    from osms.dev.cluster import ClusterError, serve

    _port_free_or_exit(port, "make cluster PORT=8081")
    _port_free_or_exit(prometheus_port, "make cluster PROMETHEUS_PORT=9091")
    logging.getLogger("mocks").setLevel(logging.WARNING)
    try:
        serve(Path(data_dir), port=port, workers=workers, prometheus_port=prometheus_port, lineage_url=lineage_url,
              say=click.echo)
    except ClusterError as exc:
        raise click.ClickException(str(exc)) from None


@main.group("deploy")
def deploy_group() -> None:
    """What docker-compose.yaml's services run, and make cluster with them: secrets, init, pools, mocks."""


@deploy_group.command("env")
@click.argument("directory", type=click.Path(file_okay=False), default=".")
@click.option("--signing-key", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The PEM private key packages are signed with (default: a fresh key pair for this deployment).")
def deploy_env(directory: str, signing_key: str | None) -> None:
    """DIRECTORY/.env and DIRECTORY/secrets/ for docker-compose.yaml: fresh secrets, passwords, signing key; kept."""
    from pathlib import Path

    from osms.dev.deploy import write_compose_env

    env, secrets_dir = write_compose_env(Path(directory), signing_key=Path(signing_key) if signing_key else None)
    click.echo(f"{env}: the deployment's variables; {secrets_dir}/: its secrets, the users' passwords and the"
               " signing key pair (keep them private, never commit them)")


@deploy_group.command("init")
@click.option("--secrets-dir", type=click.Path(exists=True, file_okay=False), envvar="OSMS_SECRETS_DIR",
              required=True, help="The deployment's secrets folder (one file per secret, the users' passwords).")
@click.option("--signing-key", type=click.Path(exists=True, dir_okay=False), envvar="OSMS_SIGNING_KEY_FILE",
              default=None, help="PEM private key for the package DAG's variable.")
@click.option("--connections", type=click.Path(exists=True, dir_okay=False), envvar="OSMS_CONNECTIONS_FILE",
              default=None, help="Connections to create or replace (JSON: {conn_id: {conn_type, host, ...}}).")
@click.option("--chain-start", type=DATE, envvar="OSMS_CHAIN_START", default=None,
              help="The delivery chain's first day, written once under OSMS_DATA_DIR (default: the first run's).")
def deploy_init(secrets_dir: str, signing_key: str | None, connections: str | None,
                chain_start: dt.date | None) -> None:
    """Check the secrets; migrate, FAB roles engineer/operator/qa and their users, the signing key, connections."""
    from pathlib import Path

    from osms.dev.deploy import init_airflow

    init_airflow(secrets_dir=Path(secrets_dir), signing_key=Path(signing_key) if signing_key else None,
                 connections=Path(connections) if connections else None, chain_start=chain_start, say=click.echo)
    click.echo("init done")


@deploy_group.command("pools")
def deploy_pools() -> None:
    """Create the source systems' pools that are missing (size OSMS_SOURCE_POOL_SLOTS, default 2); keep the others."""
    from osms.orchestration.pools import ensure_source_pools, pool_slots

    names = ensure_source_pools()
    click.echo(f"{len(names)} source-system pools (new ones with {pool_slots()} slots): {', '.join(names)}")


@deploy_group.command("mocks")
@click.option("--data-dir", envvar="OSMS_DATA_DIR", default="data", show_default=True, help="Working data root.")
@click.option("--listen", default="127.0.0.1", show_default=True,
              help="Address to serve on (in a container: 0.0.0.0, its interfaces on the compose network).")
@click.option("--advertise", default="127.0.0.1", show_default=True, help="Host name the connections give.")
@click.option("--sources-port", default=8101, show_default=True, type=click.IntRange(1, 65535))
@click.option("--receiver-port", default=8102, show_default=True, type=click.IntRange(1, 65535))
@click.option("--public-key", envvar="OSMS_SIGNING_PUBLIC_KEY", required=True,
              type=click.Path(exists=True, dir_okay=False), help="The pipeline's public key (the receiver checks with it).")
@click.option("--scale", type=float, default=None, help="Share of the real population (default 0.001).")
def deploy_mocks(data_dir: str, listen: str, advertise: str, sources_port: int, receiver_port: int,
                 public_key: str, scale: float | None) -> None:
    """Serve the mock source systems and receiver for a demo deployment, and publish their connections."""
    from pathlib import Path

    from osms.dev.deploy import serve_mocks

    serve_mocks(data_dir=Path(data_dir).resolve(), listen=listen, advertise=advertise, sources_port=sources_port,
                receiver_port=receiver_port, public_key=Path(public_key), scale=scale, say=click.echo)


def _print_summary(edition: Edition, statuses: dict[str, Any], quality: QualityDocument | None) -> None:
    click.echo("\nPer category and body: status, rows in, published, quarantined, warnings, carried forward")
    for cat in edition.categories:
        q = quality.categories.get(cat.code) if quality is not None else None
        head = f"  {cat.row:>2} {cat.code}"
        if q is not None:
            head += f"  -> package: {q.status}, {q.rows:,} rows"
        click.echo(head)
        for body in sorted({f.body for f in edition.feeds_for(cat.code)}):
            st = statuses.get(body)
            qb = q.bodies.get(body) if q is not None else None
            carried = qb.carried_forward_from if qb is not None else None
            carried_text = f" carried forward from {carried}" if carried else ""
            if st is None:
                click.echo(f"       {body:<14} no status written{carried_text}")
                continue
            try:
                c = st.category(cat.code)
            except KeyError:
                click.echo(f"       {body:<14} no status for this category{carried_text}")
                continue
            warn = sum(c.warnings_by_rule.values())
            line = (f"       {body:<14} {c.status:<10} {c.rows_in:>8,} {c.rows_published:>8,}"
                    f" {c.rows_quarantined:>6,} {warn:>5,}{carried_text}")
            if c.reason and c.status != "partial":
                line += f"  ({c.reason[:100]})"
            click.echo(line)
            if c.status != "published" and len(c.feeds) > 1:  # the verdicts are per feed: say which
                for system in sorted(c.feeds):
                    reason = c.feed_reason(system)
                    click.echo(f"         {system:<18} {c.feed_status(system):<10}"
                               + (f"  ({reason[:100]})" if reason else ""))


if __name__ == "__main__":  # pragma: no cover
    main()
