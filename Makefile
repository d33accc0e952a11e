# The two commands of the quick start are `make run` and `make test`; both set up
# the virtual environment first when it is missing or out of date.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATE ?=

.PHONY: setup run airflow cluster compose-env compose-config compose-test docs image wheels standins docker test unit e2e \
	browser servers bench bench-mocks bench-national bench-backfill bench-hostile soak soak-test clean
SCALE ?= 1.0

setup: $(STAMP)

# Re-installs only when a file that decides the environment changes.
# requirements-dev.txt is the runtime (requirements.txt, what the image holds) and the test tools.
$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	@$(BIN)/python -c "from osms.core.keys import ensure_dev_keypair; p, q = ensure_dev_keypair(); print('development signing key:', p)"
	@touch $(STAMP)

run: setup
	$(BIN)/osms run $(if $(DATE),--date $(DATE))

# Airflow with the UI on http://127.0.0.1:$(PORT), the mocks, every DAG unpaused; Ctrl-C stops it.
PORT ?= 8080
airflow: setup
	$(BIN)/osms airflow --port $(PORT)

# The distributed shape natively (make cluster): PostgreSQL, Redis, the mocks, Airflow's API server, scheduler,
# DAG processor, triggerer and two Celery workers on 127.0.0.1, configured from the files docker-compose.yaml
# reads (config/), and Prometheus on 127.0.0.1:$(PROMETHEUS_PORT) with the rules of config/prometheus; Ctrl-C
# stops it.
PROMETHEUS_PORT ?= 9090
cluster: setup servers
	$(BIN)/osms cluster --port $(PORT) --prometheus-port $(PROMETHEUS_PORT)

# docker-compose.yaml: .env and secrets/ beside it (fresh secrets, passwords and a signing key pair for this
# deployment; existing ones are kept), and the file checked as CI checks it.
compose-env: setup
	$(BIN)/osms deploy env .
compose-config: servers
	$(DOCKER_COMPOSE) config --quiet && echo "docker-compose.yaml: valid"

# The image (Dockerfile): the wheelhouse built on the host, then `docker build` offline. Where no image
# registry is reached (this project's CI machines), `make standins image BASE_IMAGE=$(STANDIN_BASE)`.
IMAGE ?= osms-airflow:latest
BASE_IMAGE ?=
STANDIN_BASE := osms-standin/python:3.11-slim-bookworm
wheels: setup
	$(BIN)/pip wheel --quiet --disable-pip-version-check --no-deps --wheel-dir docker/wheels \
	  -r constraints.txt -r docker/build-requirements.txt
image: wheels docker
	DOCKER_BUILDKIT=0 docker build --tag $(IMAGE) $(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) .
	@docker image inspect --format '{{.Size}}' $(IMAGE) | awk '{printf "$(IMAGE): %.0f MB\n", $$1/1e6}'
# Stand-ins for the public images compose starts from, from Debian's packages (docker/standin/build.sh).
standins: docker
	bash docker/standin/build.sh

# The deployment people will run, proven: the image built, docker-compose up, two days delivered through the
# REST API with a worker killed, the packages equal to osms run's, down -v (tests/container). It starts
# dockerd when no engine runs and stops what it started.
compose-test: setup docker
	$(BIN)/pytest -m container

# Debian's Docker engine (docker.io: dockerd runs as root), docker-compose and debootstrap, when missing.
DOCKERD ?= /usr/sbin/dockerd
docker:
	@missing=""; \
	[ -x "$(DOCKERD)" ] || missing="$$missing docker.io"; \
	[ -x "$(DOCKER_COMPOSE)" ] || missing="$$missing docker-compose"; \
	command -v debootstrap >/dev/null || missing="$$missing debootstrap"; \
	if [ -n "$$missing" ]; then echo "installing Debian's$$missing ..."; \
	  $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y -qq $$missing >/dev/null; fi; \
	echo "docker: $$($(DOCKERD) --version)"

# Every test: unit, integration (make cluster's among them), browser and container; installs Debian's Chromium,
# PostgreSQL, Redis, docker.io and docker-compose first when missing. The container tests (the image built, the
# compose stack started: mostly waiting on Docker) run beside the others, their output kept in
# test-artifacts/container.log and printed at the end; either failing fails the target.
test: setup browser servers docker
	@mkdir -p test-artifacts; \
	$(BIN)/pytest -m container -p no:cacheprovider --durations=5 > test-artifacts/container.log 2>&1 & container=$$!; \
	$(BIN)/pytest -m "not container and not soak" --durations=40; others=$$?; \
	wait $$container; containers=$$?; \
	echo "== the container tests (test-artifacts/container.log)"; cat test-artifacts/container.log; \
	echo "== not container: exit $$others; container: exit $$containers"; \
	[ $$others -eq 0 ] && [ $$containers -eq 0 ]

unit: setup
	$(BIN)/pytest -m unit

# Browser tests only (Debian's Chromium driven by Playwright; see tests/e2e).
e2e: setup browser
	$(BIN)/pytest -m e2e

# The browser the e2e tests drive: Debian's chromium package (Playwright downloads none).
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ -x "$(CHROMIUM)" ]; then echo "chromium: $$($(CHROMIUM) --version 2>/dev/null)"; \
	else echo "installing Debian's chromium for the browser tests ..."; \
	  $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y -qq chromium >/dev/null && \
	  $(CHROMIUM) --version; fi

# The servers of the distributed shape (make cluster and its test), the checker of docker-compose.yaml and the
# monitoring of make cluster: Debian's postgresql-15, redis-server, docker-compose and prometheus (with promtool),
# installed when missing, as chromium is above.
PG_BINDIR ?= /usr/lib/postgresql/15/bin
REDIS_SERVER ?= /usr/bin/redis-server
DOCKER_COMPOSE ?= /usr/bin/docker-compose
PROMETHEUS ?= /usr/bin/prometheus
servers:
	@missing=""; \
	[ -x "$(PG_BINDIR)/postgres" ] || missing="$$missing postgresql-15"; \
	[ -x "$(REDIS_SERVER)" ] || missing="$$missing redis-server"; \
	[ -x "$(DOCKER_COMPOSE)" ] || missing="$$missing docker-compose"; \
	[ -x "$(PROMETHEUS)" ] || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then echo "installing Debian's$$missing ..."; \
	  $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y -qq $$missing >/dev/null; fi; \
	echo "postgres: $$($(PG_BINDIR)/postgres --version)"; echo "redis: $$($(REDIS_SERVER) --version)"; \
	echo "docker-compose: $$($(DOCKER_COMPOSE) version --short)"; \
	echo "prometheus: $$($(PROMETHEUS) --version 2>&1 | head -1)"

# Figures for every stage at a size that finishes in minutes on 2 cores; the
# national-scale runs are `make bench-mocks SCALE=1.0` and BENCH_ROWS=13000000.
BENCH_ROWS ?= 2000000
# docs/decree-660.md from the registry (after a change of include/seeds/; a unit test says when it is stale).
docs: setup
	$(BIN)/python -m tests.support.decree_doc

bench: setup
	@echo "== IIN checks";            $(BIN)/python benchmarks/bench_iin.py
	@echo "== extract (HTTP -> Parquet)"; $(BIN)/python benchmarks/bench_extract.py --rows $(BENCH_ROWS)
	@echo "== validation (GX)";       $(BIN)/python benchmarks/bench_quality.py --rows $(BENCH_ROWS)
	@echo "== package (DuckDB)";      $(BIN)/python benchmarks/bench_package.py --rows $(BENCH_ROWS)

bench-mocks: setup
	$(BIN)/python benchmarks/bench_mocks.py --scale $(SCALE)

# The whole country's daily job, end to end on the real DAGs at scales 0.1 and 1.0 (about 25 minutes
# on 2 cores, most of it the first build of the national population, which is cached in bench-data/).
NATIONAL_SCALES ?= 0.1,1.0
bench-national: setup
	$(BIN)/python benchmarks/bench_national.py --scales $(NATIONAL_SCALES)

# An operator's backfill: DAYS consecutive days replayed in order, each chained on the one before, on the real
# DAGs with the mocks at SCALE (started once) and the workers kept warm; time per day and in all
# (bench-data/backfill.json). DAYS=30 SCALE=0.1 takes about half an hour on 2 cores.
bench-backfill: DAYS = 30
bench-backfill: SCALE = 0.1
bench-backfill: setup
	$(BIN)/python benchmarks/bench_backfill.py --days $(DAYS) --scale $(SCALE)

# A hostile source's page of 600 MB: the extract refuses it at its byte bound, naming the limit, its peak memory
# within the task budget (about a minute).
bench-hostile: setup
	$(BIN)/python benchmarks/bench_hostile.py

# DAYS consecutive days by catch-up on the embedded shape's real scheduler under a seeded chaos plan, then the
# audit (bench-data/soak-plan.json before, bench-data/soak.json after; exit 1 on an unexplained difference or a
# run left unfinished). FAULTS: kinds to draw from (schema_change,scheduler_kill) or fixed kind:day pairs
# (schema_change:1,scheduler_kill:2,receiver_down:3). About 3 minutes a day on 2 cores. SHAPE=cluster: not done.
DAYS ?= 14
SEED ?= 660
FAULTS ?=
SHAPE ?= embedded
soak: SCALE = 0.001
soak: setup
	$(BIN)/python -m osms.dev.soak --days $(DAYS) --scale $(SCALE) --seed $(SEED) --shape $(SHAPE) \
	  $(if $(FAULTS),--faults $(FAULTS)) --out bench-data

# The soak's own test: three days, three faults, the audit asserted (25-40 minutes here: not part of make test).
soak-test: setup servers
	$(BIN)/pytest -m soak

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
