# The OSMS image for docker-compose.yaml: Airflow's official image, the project's pinned requirements
# (requirements.txt under constraints.txt, as `make setup` installs them) and the project's code under
# /opt/osms, installed in place so that `osms`, the DAGs, the registry and the suites are where the code
# expects them. Nothing secret goes in (see .dockerignore): keys, passwords and tokens come at run time.
ARG AIRFLOW_VERSION=3.3.2
ARG PYTHON_VERSION=3.11
FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION}

COPY --chown=airflow:0 requirements.txt constraints.txt /opt/osms/
RUN pip install --no-cache-dir -r /opt/osms/requirements.txt -c /opt/osms/constraints.txt

COPY --chown=airflow:0 pyproject.toml README.md /opt/osms/
COPY --chown=airflow:0 config /opt/osms/config
COPY --chown=airflow:0 dags /opt/osms/dags
COPY --chown=airflow:0 plugins /opt/osms/plugins
COPY --chown=airflow:0 mocks /opt/osms/mocks
COPY --chown=airflow:0 include /opt/osms/include
COPY --chown=airflow:0 expectations /opt/osms/expectations
# the data root every service shares (a named volume starts as a copy of it, owned by airflow)
RUN pip install --no-cache-dir --no-deps -e /opt/osms \
 && mkdir -p /opt/airflow/data
