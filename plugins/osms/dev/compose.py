"""docker-compose.yaml under a real Docker engine on this machine: the engine, the images, one deployment.

What ``make image`` and ``make compose-test`` do, for people and for the test:

- :class:`DockerEngine`: use the engine that runs, or start Debian's ``dockerd`` (root) and stop
  it again at the end, so a test leaves the machine as it found it;
- :func:`build_standins`: where no image registry is reached, stand-ins for the public images
  the deployment starts from (``docker/standin/build.sh``: Debian 12 from Debian's packages);
- :func:`build_wheels` and :func:`build_image`: the wheelhouse on the host, then the Dockerfile
  (offline) with the base it names or a stand-in;
- :class:`ComposeStack`: one deployment (a compose project of its own, its ``.env`` and
  ``secrets/`` in a folder of its own, extra compose files for a test's settings): up, health,
  the REST API as a user, a container killed, files copied out of the data volume, down with
  its volumes.

Containers talk to each other on the project's network; every published port is on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from osms.dev.settings import ROOT

IMAGE = "osms-airflow:latest"
STANDIN_BASE = "osms-standin/python:3.11-slim-bookworm"
STANDIN_POSTGRES = "osms-standin/postgres:15-bookworm"
STANDIN_REDIS = "osms-standin/redis:7-bookworm"
WHEELS = ROOT / "docker" / "wheels"
DOCKERD = "/usr/sbin/dockerd"


class ComposeError(RuntimeError):
    """The engine, a build or a service did not do what was asked; the message says which and shows its output."""


def docker_executable() -> str:
    """The Docker client (``docker``), or ComposeError naming what to install."""
    found = shutil.which("docker")
    if not found:
        raise ComposeError("the Docker client is not installed: `make docker` installs Debian's docker.io")
    return found


def compose_executable() -> str:
    """``docker-compose`` (Debian's 1.29, or any later one on PATH)."""
    found = shutil.which("docker-compose")
    if not found:
        raise ComposeError("docker-compose is not installed: `make docker` installs Debian's docker-compose")
    return found


def docker(*args: str, timeout: float = 600, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess:
    """Run the Docker client; ComposeError with its output when it fails and ``check``."""
    out = subprocess.run([docker_executable(), *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=timeout, **kwargs)
    if check and out.returncode != 0:
        raise ComposeError(f"docker {' '.join(args[:3])} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return out


def engine_answers() -> bool:
    """True when a Docker engine answers the client."""
    try:
        return docker("info", "--format", "{{.ServerVersion}}", timeout=20, check=False).returncode == 0
    except (ComposeError, subprocess.TimeoutExpired):
        return False


@dataclass
class DockerEngine:
    """The engine a test uses: the one that runs, else Debian's ``dockerd`` started here and stopped at exit."""

    log: Path
    proc: subprocess.Popen | None = field(default=None, init=False)

    def __enter__(self) -> DockerEngine:
        if engine_answers():
            return self
        if not Path(DOCKERD).exists():
            raise ComposeError(f"no Docker engine runs and {DOCKERD} is missing: `make docker` installs docker.io")
        if os.geteuid() != 0:
            raise ComposeError("no Docker engine runs, and starting dockerd needs root")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen([DOCKERD], stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + 60
        while not engine_answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise ComposeError(f"dockerd did not start; its log {self.log}:\n{_tail(self.log)}")
            time.sleep(0.5)
        return self

    @property
    def started_here(self) -> bool:
        return self.proc is not None

    def __exit__(self, *exc: object) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # dockerd stops its containers and cleans up on SIGTERM
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def image_exists(tag: str) -> bool:
    return docker("image", "inspect", tag, check=False, timeout=30).returncode == 0


def image_size(tag: str) -> int:
    """The image's size in bytes, as ``docker images`` shows it."""
    return int(docker("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())


def build_standins(*, say: Callable[[str], None] = print) -> None:
    """The stand-in base, PostgreSQL and Redis images (built once per engine; ``docker/standin/build.sh``)."""
    if all(image_exists(t) for t in (STANDIN_BASE, STANDIN_POSTGRES, STANDIN_REDIS)):
        return
    say("building the stand-in images from Debian's packages (docker/standin/build.sh) ...")
    out = subprocess.run(["bash", str(ROOT / "docker" / "standin" / "build.sh")], stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=1200)
    if out.returncode != 0:
        raise ComposeError(f"docker/standin/build.sh failed ({out.returncode}):\n{out.stdout[-2000:]}{out.stderr[-3000:]}")


def build_wheels(python: str | None = None) -> Path:
    """``make wheels``: every pinned package (constraints.txt) and the build's setuptools as wheels, on the host."""
    pip = [python or str(Path(os.sys.executable)), "-m", "pip"]
    WHEELS.mkdir(parents=True, exist_ok=True)
    out = subprocess.run([*pip, "wheel", "--quiet", "--disable-pip-version-check", "--no-deps", "--wheel-dir",
                          str(WHEELS), "-r", str(ROOT / "constraints.txt"),
                          "-r", str(ROOT / "docker" / "build-requirements.txt")],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise ComposeError(f"pip wheel failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return WHEELS


def build_image(tag: str = IMAGE, *, base_image: str | None = None, timeout: float = 1800) -> int:
    """``docker build`` of the Dockerfile (the classic builder, as Debian's engine has it); the image's size."""
    args = ["build", "--tag", tag, *(["--build-arg", f"BASE_IMAGE={base_image}"] if base_image else []), str(ROOT)]
    docker(*args, timeout=timeout, env={**os.environ, "DOCKER_BUILDKIT": "0"})
    return image_size(tag)


def image_files_with_secrets(tag: str) -> list[str]:
    """Files of the image that hold a private key, a password, secret or token assignment, or a pip, netrc or
    .env file of a building machine: what no layer may hold (public CA certificates are fine)."""
    script = r"""
import os, re, sys
pattern = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----|(?:PASSWORD|SECRET|TOKEN|FERNET_KEY)\s*=\s*['\"]?[A-Za-z0-9_\-]{12,}")
roots = ["/opt/osms", "/opt/airflow", "/etc", "/root", "/tmp", "/home"]
skip = ("/opt/osms/plugins/osms/ui/static/vendor",)
found = []
for root in roots:
    for d, dirs, files in os.walk(root):
        if d.startswith(skip):
            continue
        for f in files:
            p = os.path.join(d, f)
            name = f.lower()
            if name in (".env", "pip.conf", "secrets.env", ".netrc", ".pypirc"):
                found.append(p); continue
            try:
                with open(p, "rb") as fh:
                    head = fh.read(1 << 20)
            except OSError:
                continue
            if pattern.search(head):
                found.append(p)
print("\n".join(found))
"""
    out = docker("run", "--rm", "--user", "0:0", "--entrypoint", "python3", tag, "-c", script, timeout=300)
    return [line for line in out.stdout.splitlines() if line]


@dataclass
class ComposeStack:
    """One deployment of docker-compose.yaml: project ``project``, its ``.env`` and ``secrets/`` in ``directory``."""

    project: str
    directory: Path
    extra_files: Sequence[Path] = ()
    variables: dict[str, str] = field(default_factory=dict)  # added to the .env (images, ports)
    api_port: int = 8080
    _tokens: dict[str, str] = field(default_factory=dict, init=False, repr=False)

    @property
    def env_file(self) -> Path:
        return self.directory / ".env"

    @property
    def secrets_dir(self) -> Path:
        return self.directory / "secrets"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def write_env(self, *, signing_key: Path | None = None) -> None:
        """``make compose-env`` into the folder, plus this stack's variables (its secrets folder, images, port)."""
        from osms.dev import deploy, settings

        deploy.write_compose_env(self.directory, signing_key=signing_key)
        values = settings.parse_env_file(self.env_file)
        values.update({"OSMS_SECRETS": str(self.secrets_dir), "OSMS_API_PUBLISHED_PORT": str(self.api_port),
                       **self.variables})
        settings.write_env_file(self.env_file, values, header="docker-compose.yaml's variables for a test deployment")

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        """``docker-compose -p <project> --env-file <.env> -f docker-compose.yaml [-f extra ...] <args>``."""
        files = [ROOT / "docker-compose.yaml", *self.extra_files]
        cmd = [compose_executable(), "--project-name", self.project, "--project-directory", str(ROOT),
               "--env-file", str(self.env_file), *[a for f in files for a in ("-f", str(f))], *args]
        out = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                             cwd=ROOT)
        if check and out.returncode != 0:
            raise ComposeError(f"docker-compose {' '.join(args[:2])} failed ({out.returncode}):\n"
                               f"{out.stdout[-2000:]}{out.stderr[-3000:]}")
        return out

    def up(self, *, workers: int = 2) -> None:
        self.compose("up", "--detach", "--no-build", "--scale", f"airflow-worker={workers}", timeout=900)

    def containers(self, service: str | None = None, *, all_states: bool = True) -> list[dict[str, Any]]:
        """The project's containers (``docker inspect``), optionally of one service, by service then number."""
        label = [f"--filter=label=com.docker.compose.project={self.project}"]
        if service:
            label.append(f"--filter=label=com.docker.compose.service={service}")
        ids = docker("ps", "--quiet", *(["--all"] if all_states else []), *label).stdout.split()
        if not ids:
            return []
        found = json.loads(docker("inspect", *ids).stdout)
        labels = lambda c: c["Config"]["Labels"]  # noqa: E731
        return sorted(found, key=lambda c: (labels(c)["com.docker.compose.service"],
                                            int(labels(c).get("com.docker.compose.container-number", 0))))

    def health(self) -> dict[str, str]:
        """Each container's name and its health (``healthy``), or its state when it has no health check."""
        out = {}
        for c in self.containers():
            state = c["State"]
            out[c["Name"].lstrip("/")] = state.get("Health", {}).get("Status") or state["Status"]
        return out

    def wait_healthy(self, *, timeout: float = 600, one_shots: Iterable[str] = ("airflow-init",)) -> dict[str, str]:
        """Wait until every service is healthy and each one-shot exited 0; ComposeError with the logs otherwise."""
        one_shots = set(one_shots)
        deadline = time.monotonic() + timeout
        while True:
            containers = self.containers()
            pending, failed = [], []
            for c in containers:
                service = c["Config"]["Labels"]["com.docker.compose.service"]
                state = c["State"]
                if service in one_shots:
                    if state["Status"] == "exited" and state["ExitCode"] != 0:
                        failed.append(service)
                    elif state["Status"] != "exited":
                        pending.append(service)
                elif state.get("Health", {}).get("Status") != "healthy":
                    # unhealthy is not final: a component still starting on a loaded host recovers
                    if state["Status"] in ("exited", "dead"):
                        failed.append(service)
                    pending.append(service)
            if failed:
                raise ComposeError(f"services failed: {sorted(set(failed))}\n{self.logs(sorted(set(failed)))}")
            if containers and not pending:
                return self.health()
            if time.monotonic() > deadline:
                raise ComposeError(f"not healthy after {timeout:.0f} s: {sorted(set(pending))}\n"
                                   f"{self.logs(sorted(set(pending)))}")
            time.sleep(2)

    def logs(self, services: Sequence[str] = (), lines: int = 30) -> str:
        out = self.compose("logs", "--no-color", "--tail", str(lines), *services, check=False, timeout=120)
        return out.stdout[-8000:]

    def token(self, user: str) -> str:
        """A JWT for ``user`` from the API server's login (the password from the secrets folder), kept for reuse."""
        import httpx

        from osms.dev.deploy import read_passwords

        if user not in self._tokens:
            answer = httpx.post(f"{self.url}/auth/token", json={"username": user, "password": read_passwords(
                self.secrets_dir)[user]}, timeout=120)
            if answer.status_code not in (200, 201):
                raise ComposeError(f"login of {user} answered {answer.status_code}: {answer.text[:300]}")
            self._tokens[user] = answer.json()["access_token"]
        return self._tokens[user]

    def api(self, method: str, path: str, *, user: str = "engineer", ok: Sequence[int] = (200,),
            timeout: float = 180, **kwargs: Any) -> Any:
        """One REST call as ``user``; ComposeError unless the status is in ``ok``.

        The timeout is generous: on a loaded two-core host the API server answers a backfill's
        creation, which writes its runs, in tens of seconds.
        """
        import httpx

        answer = httpx.request(method, f"{self.url}{path}", headers={"Authorization": f"Bearer {self.token(user)}"},
                               timeout=timeout, **kwargs)
        if answer.status_code not in ok:
            raise ComposeError(f"{method} {path} as {user} answered {answer.status_code}: {answer.text[:500]}")
        return answer.json() if answer.content else None

    def kill(self, container: str) -> None:
        """SIGKILL a container, as when its host dies (a killed container is not restarted by its policy)."""
        docker("kill", container)

    def copy_out(self, service: str, path: str, dest: Path) -> Path:
        """Copy ``path`` (a folder or file inside the service's first container) to ``dest`` on the host."""
        container = self.containers(service)[0]["Name"].lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        docker("cp", f"{container}:{path}", str(dest), timeout=300)
        return dest

    def down(self) -> None:
        """Stop and remove the containers, the network and the volumes."""
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "30", timeout=600)

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, volumes and networks of the project that still exist."""
        label = f"label=com.docker.compose.project={self.project}"
        return {
            "containers": docker("ps", "--all", "--quiet", "--filter", label).stdout.split(),
            "volumes": docker("volume", "ls", "--quiet", "--filter", label).stdout.split(),
            "networks": docker("network", "ls", "--quiet", "--filter", label).stdout.split(),
        }


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
