#!/usr/bin/env bash
# Stand-ins for the three public images docker-compose.yaml starts from, for a machine that reaches no image
# registry but does reach Debian's packages (this project's CI machines):
#
#   osms-standin/python:3.11-slim-bookworm   for the Dockerfile's BASE_IMAGE (python:3.11.x-slim-bookworm)
#   osms-standin/postgres:15-bookworm        for OSMS_POSTGRES_IMAGE (postgres:15)
#   osms-standin/redis:7-bookworm            for OSMS_REDIS_IMAGE (redis:7.2-bookworm)
#
# Each is Debian 12 (bookworm, the release the official images are built on) from Debian's own packages:
# debootstrap writes a minimal root file system, apt-get (in a chroot) adds PostgreSQL 15 or Redis, and
# `docker import` makes it an image. The Python stand-in has Debian's Python 3.11 where the official image has
# its own build of 3.11 in /usr/local; `python`, `python3` and `pip` answer there as in the official image.
# The PostgreSQL stand-in's entry point does what the official image's does for this project (POSTGRES_USER,
# POSTGRES_DB, POSTGRES_PASSWORD_FILE, a first start that creates the cluster, the server as `postgres`).
#
# Nothing of the building machine goes in: its resolver, host name, apt caches and lists are removed, and the
# CA certificates are Debian's own bundle, not the machine's. The Dockerfile is the same with either base.
#
#   docker/standin/build.sh           # build what is missing
#   docker/standin/build.sh --force   # build all three again
#
# Needs root (debootstrap, chroot), debootstrap and a running Docker engine (make docker-engine).
set -euo pipefail

MIRROR=${OSMS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
PYTHON_IMAGE=osms-standin/python:3.11-slim-bookworm
POSTGRES_IMAGE=osms-standin/postgres:15-bookworm
REDIS_IMAGE=osms-standin/redis:7-bookworm
HERE=$(cd "$(dirname "$0")" && pwd)
FORCE=${1:-}

have() { [ "$FORCE" != "--force" ] && docker image inspect "$1" >/dev/null 2>&1; }
if have "$PYTHON_IMAGE" && have "$POSTGRES_IMAGE" && have "$REDIS_IMAGE"; then
  echo "stand-in images present: $PYTHON_IMAGE $POSTGRES_IMAGE $REDIS_IMAGE"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "docker/standin/build.sh: debootstrap and chroot need root" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "debootstrap is not installed: make docker-engine installs it" >&2; exit 1; }

WORK=$(mktemp -d /var/tmp/osms-standin.XXXXXX)
cleanup() {
  for root in "$WORK"/*/; do
    for m in proc dev/pts; do mountpoint -q "$root$m" 2>/dev/null && umount -l "$root$m"; done
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

# the root file system without anything of this machine: resolver, host name, apt's caches and lists
scrub() {
  local root=$1
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
         "$root"/var/log/* "$root"/tmp/* "$root"/root/.cache "$root"/usr/share/doc/* "$root"/usr/share/man/* \
         "$root"/usr/share/locale/* "$root"/usr/sbin/policy-rc.d "$root"/debootstrap
  : > "$root/etc/resolv.conf"
  echo localhost > "$root/etc/hostname"
  printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"
  : > "$root/etc/machine-id"
}

# apt-get inside a copy of the base: services are not started while installing (policy-rc.d)
chroot_install() {
  local root=$1; shift
  printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"; chmod 755 "$root/usr/sbin/policy-rc.d"
  cp /etc/resolv.conf "$root/etc/resolv.conf"  # the chroot fetches packages; scrub() empties it again
  mount -t proc proc "$root/proc"
  chroot "$root" apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1
  umount -l "$root/proc"
}

import() {
  local root=$1 tag=$2; shift 2
  scrub "$root"
  tar --numeric-owner -C "$root" -c . | docker import "$@" - "$tag" >/dev/null
  echo "built $tag ($(docker image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
}

echo "debootstrap $SUITE (minbase) from $MIRROR ..."
debootstrap --variant=minbase --include=python3.11,python3.11-venv,python3-venv,ca-certificates,tzdata,netbase \
  "$SUITE" "$WORK/base" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
  || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
# as the official image: python, python3 and pip on /usr/local/bin
ln -sf /usr/bin/python3.11 "$WORK/base/usr/local/bin/python"
ln -sf /usr/bin/python3.11 "$WORK/base/usr/local/bin/python3"

cp -a "$WORK/base" "$WORK/postgres"
cp -a "$WORK/base" "$WORK/redis"

if ! have "$PYTHON_IMAGE"; then
  import "$WORK/base" "$PYTHON_IMAGE" \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]'
fi

if ! have "$POSTGRES_IMAGE"; then
  mkdir -p "$WORK/postgres/etc/postgresql-common"
  echo "create_main_cluster = false" > "$WORK/postgres/etc/postgresql-common/createcluster.conf"
  chroot_install "$WORK/postgres" postgresql-15
  install -m 0755 "$HERE/postgres-entrypoint.sh" "$WORK/postgres/usr/local/bin/docker-entrypoint.sh"
  install -d -m 0700 "$WORK/postgres/var/lib/postgresql/data"
  chroot "$WORK/postgres" chown -R postgres:postgres /var/lib/postgresql
  install -d -m 2775 "$WORK/postgres/var/run/postgresql"
  chroot "$WORK/postgres" chown postgres:postgres /var/run/postgresql
  import "$WORK/postgres" "$POSTGRES_IMAGE" \
    --change 'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV PGDATA=/var/lib/postgresql/data' --change 'ENV LANG=C.UTF-8' \
    --change 'ENTRYPOINT ["docker-entrypoint.sh"]' --change 'CMD ["postgres"]' \
    --change 'EXPOSE 5432'
fi

if ! have "$REDIS_IMAGE"; then
  chroot_install "$WORK/redis" redis-server
  install -d -m 0755 "$WORK/redis/data"
  import "$WORK/redis" "$REDIS_IMAGE" \
    --change 'ENV LANG=C.UTF-8' --change 'WORKDIR /data' --change 'CMD ["redis-server"]' --change 'EXPOSE 6379'
fi
