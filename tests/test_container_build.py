"""Build the CPU image and run the station from it (issue 17, point 3).

The builder is Debian's buildah, as root, with the ``vfs`` storage driver and
``chroot`` isolation (this machine's cgroup v1/v2 hybrid stops crun and runc from
starting a container; chroot isolation needs neither), in a storage folder of its own
that is removed afterwards. Where buildah is not installed the test skips, saying so.

The base image: ``python:3.11.11-slim-bookworm`` when the registry answers. Where it
does not (this project's machines reach PyPI, Debian and npm only: the pull fails on
the registry's name), the same Dockerfile is built on a stand-in made here from
Debian's own packages: ``debootstrap`` of bookworm (the Debian release of the real
base) with ``python3``, a venv in ``/usr/local`` (so ``python`` and ``pip`` are where
the real image has them), apt's ``docker-clean`` settings as in Debian's images, and
this machine's CA bundle (pip inside reaches the index as pip outside does); its files
are kept in ``~/.cache/kanjian-test`` for the next run. Every instruction of
``deploy/containers/Dockerfile.cpu`` runs unchanged (``--from`` swaps the first FROM).
Without debootstrap, root or a bookworm mirror in apt's sources, the test skips, naming
the pull's error and what is missing.

In the image: the config it declares (user 10001, SIGTERM, /data, the health check);
one ONNX Runtime, the CPU build; ``kanjian run --frames 3`` judges three demo frames;
``kanjian serve`` answers ``/api/health`` (the image's own HEALTHCHECK command, run in
it) and, on SIGTERM, flushes its store and exits 0.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = "deploy/containers/Dockerfile.cpu"
BASE = "docker.io/library/python:3.11.11-slim-bookworm"
STAND_IN = "localhost/kanjian-base:bookworm-py311"
TAG = "localhost/kanjian-test:cpu"
#: Debian's docker-clean (apt keeps no .deb files in a layer), as in its own images
DOCKER_CLEAN = """\
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
"""
OWNERS = (
    "import json, importlib.metadata as m; print(json.dumps(sorted("
    "d.metadata['Name'] for d in m.distributions() "
    "if any(str(f) == 'onnxruntime/__init__.py' for f in (d.files or [])))))"
)


class Buildah:
    """buildah on its own storage folder (vfs), chroot isolation."""

    def __init__(self, exe: str, root: Path) -> None:
        self.cmd = [exe, "--root", str(root / "storage"), "--runroot", str(root / "run")]
        self.cmd += ["--storage-driver", "vfs"]

    def __call__(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.cmd, *args], capture_output=True, text=True, timeout=timeout, check=False
        )

    def ok(self, *args: str, timeout: float = 600) -> str:
        r = self(*args, timeout=timeout)
        assert r.returncode == 0, f"buildah {' '.join(args)}:\n{r.stdout[-3000:]}{r.stderr[-3000:]}"
        return r.stdout


def _bookworm_mirror() -> str | None:
    """The Debian mirror apt here uses for bookworm (deb822 or one-line sources)."""
    texts = []
    for p in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        if p.is_file() and p.suffix in ("", ".list", ".sources"):
            texts.append(p.read_text(errors="replace"))
    for text in texts:
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if (
                uris
                and suites
                and "bookworm" in suites.group(1).split()
                and "/debian" in uris.group(1)
                and "security" not in uris.group(1)
            ):
                return uris.group(1)
        m = re.search(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+/debian/?)\s+bookworm\s", text, re.M)
        if m:
            return m.group(1)
    return None


#: the stand-in's file system, kept between runs (~210 MB; delete it to make it anew)
ROOTFS_CACHE = (
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    / "kanjian-test"
    / "bookworm-py311-rootfs.tar"
)


def _stand_in_base(b: Buildah, work: Path, pull_error: str) -> None:
    """Make :data:`STAND_IN` from Debian bookworm's packages (its file system cached in
    :data:`ROOTFS_CACHE`), or skip saying why."""
    if not ROOTFS_CACHE.is_file():
        _debootstrap(work, pull_error)
    ctr = b.ok("from", "scratch").strip()
    b.ok("add", ctr, str(ROOTFS_CACHE), "/")
    path = "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"
    env = ["--env", f"PATH={path}", "--env", "PIP_CERT=/etc/ssl/certs/ca-certificates.crt"]
    b.ok("config", *env, "--cmd", "python3", ctr)
    b.ok("commit", "-q", ctr, STAND_IN)
    b.ok("rm", ctr)


def _debootstrap(work: Path, pull_error: str) -> None:
    """Debian bookworm (minbase) with Python in a venv at /usr/local, as a tar file in
    :data:`ROOTFS_CACHE`; or skip saying why it cannot be made."""
    why = f"the base {BASE} cannot be pulled ({pull_error}), and no stand-in can be made: "
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        pytest.skip(why + "debootstrap is not installed (apt-get install debootstrap)")
    if os.geteuid() != 0:
        pytest.skip(why + "debootstrap and chroot need root")
    mirror = _bookworm_mirror()
    if mirror is None:
        pytest.skip(why + "apt's sources here name no Debian bookworm mirror")
    rootfs = work / "rootfs"
    include = "python3,python3-venv,ca-certificates"
    r = subprocess.run(
        [debootstrap, "--variant=minbase", f"--include={include}", "bookworm", str(rootfs), mirror],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    r = subprocess.run(
        ["chroot", str(rootfs), "/usr/bin/python3", "-m", "venv", "/usr/local"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    (rootfs / "etc/apt/apt.conf.d/docker-clean").write_text(DOCKER_CLEAN)
    for junk in ("var/lib/apt/lists", "var/cache/apt/archives"):
        for p in (rootfs / junk).glob("*"):
            if p.is_file():
                p.unlink()
    ca = Path(os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt")
    if ca.is_file():  # pip inside trusts what pip here trusts
        shutil.copyfile(ca, rootfs / "etc/ssl/certs/ca-certificates.crt")
    ROOTFS_CACHE.parent.mkdir(parents=True, exist_ok=True)
    tar = ROOTFS_CACHE.with_suffix(f".{os.getpid()}.tmp")
    with tarfile.open(tar, "w") as t:
        t.add(rootfs, arcname=".")
    shutil.rmtree(rootfs)
    tar.replace(ROOTFS_CACHE)  # whole or not at all


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Buildah, str]]:
    """(buildah, a working container of the built CPU image); the storage is removed at
    the end (the vfs driver keeps whole copies: several GB)."""
    exe = shutil.which("buildah")
    if exe is None:
        pytest.skip("no container builder: buildah is not installed (scripts/test.sh installs it)")
    work = tmp_path_factory.mktemp("buildah")
    b = Buildah(exe, work)
    try:
        pulled = b("pull", "-q", BASE, timeout=600)
        base_args: list[str] = []
        if pulled.returncode != 0:
            error = (pulled.stderr.strip().splitlines() or ["no message"])[-1][:300]
            _stand_in_base(b, work, error)
            base_args = ["--from", STAND_IN]
        t0 = time.monotonic()
        build = ["bud", "--isolation", "chroot", "--layers=false", "--format", "docker"]
        b.ok(*build, *base_args, "-f", str(REPO / DOCKERFILE), "-t", TAG, str(REPO), timeout=2400)
        size = json.loads(b.ok("images", "--json", TAG))[0]["size"]
        on = base_args[1] if base_args else BASE
        print(f"built {TAG} on {on} in {time.monotonic() - t0:.0f} s: {size}")
        yield b, b.ok("from", "-q", TAG).strip()
    finally:
        b("rm", "--all")
        b("rmi", "--all", "--force")
        shutil.rmtree(work, ignore_errors=True)


def _in(b: Buildah, ctr: str, *argv: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``argv`` in the container, as the image's user, in its WORKDIR."""
    return b("run", "--isolation", "chroot", ctr, "--", *argv, timeout=timeout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pid_of(port: int) -> int | None:
    """The station serving on ``port`` (chroot isolation shares this PID namespace)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        # the Python process itself, not buildah's nor its chroot-exec helper
        exe = os.path.basename(argv[0])
        if b"serve" in argv and str(port).encode() in argv and exe.startswith(b"python"):
            return int(proc.name)
    return None


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_cpu_image_declares_its_contract(image: tuple[Buildah, str]) -> None:
    b, _ = image
    cfg = json.loads(b.ok("inspect", "--type", "image", TAG))["Docker"]["config"]
    assert cfg["User"] == "10001:10001"
    assert cfg["StopSignal"] == "SIGTERM"
    assert "/data" in cfg["Volumes"]
    assert cfg["Entrypoint"] == ["kanjian"] and cfg["Cmd"][0] == "serve"
    assert "/api/health" in " ".join(cfg["Healthcheck"]["Test"])


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_cpu_image_runs_the_station(image: tuple[Buildah, str]) -> None:
    b, ctr = image
    r = _in(b, ctr, "id", "-u")
    assert r.stdout.strip() == "10001"
    r = _in(b, ctr, "python", "-c", OWNERS)
    assert json.loads(r.stdout) == ["onnxruntime"], r.stderr
    r = _in(b, ctr, "kanjian", "run", "--frames", "3", "--data-dir", "/data/t")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert re.search(r"^3 inspections", r.stderr + r.stdout, re.M), r.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_cpu_image_serves_checks_health_and_stops_on_sigterm(image: tuple[Buildah, str]) -> None:
    """On 127.0.0.1 and a free port: chroot isolation shares this machine's network, so
    the image's default ``--host 0.0.0.0 --port 8080`` would listen on every interface."""
    b, ctr = image
    port = _free_port()
    argv = ["kanjian", "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", "/data/s"]
    proc = subprocess.Popen(
        [*b.cmd, "run", "--isolation", "chroot", ctr, "--", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/api/health?probe=live"
        deadline = time.monotonic() + 300
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(url, timeout=3) as resp:
                    status = resp.status
                    break
            except OSError:
                time.sleep(1)
        if status != 200:
            proc.kill()
            pytest.fail(f"no answer on {url}; the station said:\n{proc.communicate()[0][-3000:]}")
        # the image's own HEALTHCHECK command, pointed at this port, run in the image
        cfg = json.loads(b.ok("inspect", "--type", "image", TAG))["Docker"]["config"]
        check = [a.replace(":8080/", f":{port}/") for a in cfg["Healthcheck"]["Test"][1:]]
        assert _in(b, ctr, *check).returncode == 0
        pid = _pid_of(port)
        assert pid is not None, "the station's process was not found"
        os.kill(pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out[-3000:]
        assert "store flushed" in out, out[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
