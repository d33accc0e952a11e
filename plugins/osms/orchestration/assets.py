"""The Airflow Assets of the pipeline: each body's status and the package, as lineage sees them.

One Asset per body's status (``file://<data root>/status/<body>``: the body's
``status/D/<body>.json`` of every day D) and one for the package
(``file://<data root>/packages``: ``packages/D/`` of every day). The agency DAG's
``publish_status`` writes its body's status; the package DAG's sensors and ``build_package``
read every body's, ``build_package`` writes the package and ``deliver`` reads it. Declared
as the tasks' inlets and outlets, they are what Airflow's OpenLineage provider puts in each
task's events as inputs and outputs (a ``file`` dataset named by the path), so a lineage
store draws body -> status -> package. The URI names the data root of the deployment
(``OSMS_DATA_DIR``, the same absolute path on every host), never a record.
"""

from __future__ import annotations

from airflow.sdk import Asset

from osms.core import layout

GROUP = "osms"


def status_asset(body: str) -> Asset:
    """The Asset of a body's status: ``file://<data root>/status/<body>``."""
    return Asset(name=f"osms.status.{body}", uri=f"file://{layout.paths().status_asset(body)}", group=GROUP)


def package_asset() -> Asset:
    """The Asset of the daily package: ``file://<data root>/packages``."""
    return Asset(name="osms.package", uri=f"file://{layout.paths().packages_root()}", group=GROUP)
