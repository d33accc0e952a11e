# The OSMS image for docker-compose.yaml: exactly the environment `make setup` installs and the tests use.
#
# Why not Airflow's official image: apache/airflow carries its own providers and its own pins, and the
# project's constraints.txt installed on top of them would resolve to a third environment that nothing tests.
# So the base is plain Python (the official python image of the same Debian release, bookworm, pinned by tag
# and by the digest of its multi-architecture index), and the image holds requirements.txt under
# constraints.txt and nothing else: the runtime, never the test tools (requirements-dev.txt).
#
# Offline: the dependencies are installed from a wheelhouse built on the host (`make wheels`, docker/wheels/),
# never fetched inside the build, so no index URL, proxy or CA bundle of the building machine reaches a layer;
# the wheels themselves stay in the first stage. Without a wheelhouse (a machine that builds only with
# `docker build .`) pip takes them from PyPI.
#
# Where no registry can be reached, `make image` passes BASE_IMAGE=osms-standin/python:3.11-slim-bookworm, a
# stand-in of the same Debian release and Python minor version built from Debian's packages
# (docker/standin/build.sh); this file is the same for both.
#
# Layers: the dependencies change with requirements.txt/constraints.txt only; a change of the code rebuilds
# the last layers in seconds. The image runs as `airflow` (uid 50000, group 0, as Airflow's image does, so
# that compose can run it as the host user's uid in group 0). Nothing secret goes in (.dockerignore):
# keys, passwords and tokens reach the services at run time as compose secrets.
ARG BASE_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

FROM ${BASE_IMAGE} AS dependencies
COPY docker/wheels/ /tmp/wheels/
COPY requirements.txt constraints.txt docker/build-requirements.txt /tmp/requirements/
RUN set -eu; \
    python3 -m venv /opt/venv; \
    if ls /tmp/wheels/*.whl >/dev/null 2>&1; then from="--no-index --find-links /tmp/wheels"; else from=""; fi; \
    /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check $from \
        -r /tmp/requirements/requirements.txt -r /tmp/requirements/build-requirements.txt \
        -c /tmp/requirements/constraints.txt; \
    /opt/venv/bin/pip check

FROM ${BASE_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LANG=C.UTF-8 \
    AIRFLOW_HOME=/opt/airflow
RUN set -eu; \
    useradd --uid 50000 --gid 0 --home-dir /opt/airflow --no-create-home --shell /bin/bash airflow; \
    install -d -o 50000 -g 0 -m 0775 /opt/airflow /opt/airflow/logs; \
    install -d -o 50000 -g 0 -m 0770 /opt/airflow/data
COPY --from=dependencies /opt/venv /opt/venv

# the project, installed in place (editable: the registry, suites, DAGs and settings are found beside the code)
COPY pyproject.toml README.md /opt/osms/
COPY config /opt/osms/config
COPY include /opt/osms/include
COPY expectations /opt/osms/expectations
COPY mocks /opt/osms/mocks
COPY plugins /opt/osms/plugins
COPY dags /opt/osms/dags
COPY docker/entrypoint.sh /opt/osms/docker/entrypoint.sh
RUN pip install --no-cache-dir --disable-pip-version-check --no-deps --no-index --no-build-isolation -e /opt/osms \
 && python -m compileall -q /opt/osms/plugins /opt/osms/mocks /opt/osms/dags

USER 50000:0
WORKDIR /opt/airflow
# dumb-init: PID 1 forwards signals to the process group and reaps children (what Airflow's image uses)
ENTRYPOINT ["dumb-init", "--", "/opt/osms/docker/entrypoint.sh"]
CMD ["airflow", "version"]
