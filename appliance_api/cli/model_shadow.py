"""``kanjian model shadow set|clear|status`` and ``kanjian model promote``: a running
station's shadow model, through its HTTP API.

Through the API rather than the station's database (as ``kanjian model names`` does):
loading a shadow starts a process of the running station and promoting one swaps its
model between two frames; only that process can. So these commands need the station
served (``kanjian serve``), its address (``--url`` or ``KANJIAN_URL``) and an engineer's
token (``--token`` or ``KANJIAN_TOKEN``, made with ``kanjian token create --role
engineer``). A refusal (unknown model, failed golden check, the promotion gate) is
printed as the station words it and ends the command with exit status 1; a station
that cannot be reached, with 2.
"""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

console = Console(stderr=True)
out = Console(soft_wrap=True)
shadow_app = typer.Typer(
    help="Load, stop and show a shadow model on a running station (its HTTP API).",
    no_args_is_help=True,
)

UrlOpt = Annotated[
    str,
    typer.Option("--url", envvar="KANJIAN_URL", help="the station's API address"),
]
TokenOpt = Annotated[
    str,
    typer.Option(
        "--token",
        envvar="KANJIAN_TOKEN",
        help="an engineer's token (kanjian token create --role engineer)",
        show_default=False,
    ),
]
DEFAULT_URL = "http://127.0.0.1:8080"
ARCHIVES = (".zip", ".tar.gz", ".tgz", ".tar")


def _fail(message: str, code: int = 1) -> typer.Exit:
    console.print(f"[red]error:[/] {message}", highlight=False, soft_wrap=True, markup=True)
    return typer.Exit(code)


def _call(
    url: str,
    token: str,
    method: str,
    path: str,
    body: Any = None,
    raw: bytes | None = None,
    content_type: str = "application/json",
    timeout_s: float = 900.0,
) -> Any:
    """One API request; the answer's JSON. Exits 1 with the station's words on a refusal,
    2 when the station cannot be reached."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url.rstrip("/") + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            return json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        try:
            detail = json.loads(e.read()).get("detail", e.reason)
        except ValueError:
            detail = e.reason
        raise _fail(f"{method} {path}: {e.code} {detail}") from e
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise _fail(
            f"cannot reach the station at {url} ({reason}): is `kanjian serve` running there? "
            "(--url or KANJIAN_URL)",
            2,
        ) from e


def _archive(bundle: Path) -> tuple[bytes, str]:
    """A bundle folder zipped (the folder at the top), or an archive file as it is."""
    if bundle.is_dir():
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for p in sorted(bundle.rglob("*")):
                zf.write(p, f"{bundle.name}/{p.relative_to(bundle)}")
        return buf.getvalue(), "application/zip"
    if bundle.is_file() and bundle.name.lower().endswith(ARCHIVES):
        return bundle.read_bytes(), "application/octet-stream"
    raise _fail(f"--bundle {bundle}: not a bundle folder nor a .zip / .tar.gz / .tar archive", 2)


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:.1f}%"


def _ms(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f} ms"


def print_state(state: dict[str, Any]) -> None:
    """``GET /api/shadow`` as lines a person reads."""
    s, g = state["shadow"], state["gate"]
    if s is None:
        out.print("no shadow model is loaded", markup=False)
        return
    child = f"child {s['child']}" + (f" (pid {s['child_pid']})" if s["child_pid"] else "")
    if s["mode"]:
        child += f"; mode {s['mode']} ({_pct(s['judged_share'])} of recent frames judged)"
    lines = [
        f"shadow {s['name']} v{s['version']} ({s['sha256'][:12]}) loaded by {s['started_by']} "
        f"at {s['started_at']}",
        child,
        f"offered {s['offered']}, judged {s['judged']}, skipped {s['skipped']}, "
        f"errors {s['errors']}; latency mean {_ms(s['latency_mean_ms'])}, "
        f"p95 {_ms(s['latency_p95_ms'])}",
    ]
    if s["last_error"]:
        lines.append(f"last error: {s['last_error']}")
    verdict = "passes" if g["passed"] else "refuses: " + "; ".join(g["failed"])
    lines.append(
        f"promotion gate: frames {g['frames']} (min {g['min_frames']}), agreement "
        f"{_pct(g['agreement'])} (min {_pct(g['min_agreement'])}), wrong on feedback "
        f"{g['shadow_wrong']} vs active {g['active_wrong']} of {g['feedback_frames']} "
        f"({'must be no worse' if g['no_worse_on_feedback'] else 'not checked'}): {verdict}"
    )
    for line in lines:
        out.print(line, markup=False, highlight=False)


@shadow_app.command("set")
def shadow_set(
    sha256: Annotated[
        str | None, typer.Argument(help="a registered model's sha256 (GET /api/models)")
    ] = None,
    bundle: Annotated[
        Path | None,
        typer.Option("--bundle", help="upload this bundle folder (or archive) first, then load it"),
    ] = None,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = "",
) -> None:
    """Load a model as the station's shadow: it judges the frames the active model judged,
    on spare capacity, and never touches a verdict. Its golden check runs first."""
    if (sha256 is None) == (bundle is None):
        raise _fail("give a registered model's SHA256 or --bundle DIR, one of the two", 2)
    if not token:
        raise _fail("an engineer's token is needed: --token or KANJIAN_TOKEN", 2)
    if bundle is not None:
        raw, ctype = _archive(bundle)
        up = _call(url, token, "POST", "/api/models", raw=raw, content_type=ctype)
        m = up["model"]
        said = "uploaded" if up["created"] else "already registered"
        out.print(f"{said}: {m['name']} v{m['version']} ({m['sha256'][:12]})", markup=False)
        sha256 = str(m["sha256"])
    print_state(_call(url, token, "PUT", "/api/shadow", {"sha256": sha256}))


@shadow_app.command("clear")
def shadow_clear(url: UrlOpt = DEFAULT_URL, token: TokenOpt = "") -> None:
    """Stop the shadow (its stored results stay)."""
    if not token:
        raise _fail("an engineer's token is needed: --token or KANJIAN_TOKEN", 2)
    print_state(_call(url, token, "DELETE", "/api/shadow"))


@shadow_app.command("status")
def shadow_status(
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = "",
    as_json: Annotated[bool, typer.Option("--json", help="GET /api/shadow as it is")] = False,
) -> None:
    """The shadow: counters, measured mode, latency, and the promotion gate now."""
    if not token:
        raise _fail("a token is needed: --token or KANJIAN_TOKEN", 2)
    state = _call(url, token, "GET", "/api/shadow")
    if as_json:
        out.print(json.dumps(state, indent=2), markup=False, highlight=False)
    else:
        print_state(state)


def promote_command(
    force: Annotated[
        bool,
        typer.Option("--force", help="skip the promotion gate (the golden check still runs)"),
    ] = False,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = "",
) -> None:
    """Promote the running station's shadow model to active model.

    The promotion gate (``shadow`` in station.yaml) first, then the golden check, then
    the same activation as any: POST /api/models/rollback brings the old model back. A
    refusal names every condition that failed, with its numbers, and exits 1.
    """
    if not token:
        raise _fail("an engineer's token is needed: --token or KANJIAN_TOKEN", 2)
    done = _call(url, token, "POST", "/api/shadow/promote", {"force": force})
    out.print(
        f"promoted {done['name']} v{done['version']} ({done['sha256'][:12]})"
        + (f", replacing {done['replaced'][:12]}" if done["replaced"] else "")
        + (" (gate skipped: --force)" if done["forced"] else ""),
        markup=False,
        highlight=False,
    )
