"""Broker credentials and topic ACLs for Mosquitto: ``kanjian platform acl``.

Writes, into one folder:

- ``passwd``: Mosquitto's password file, one ``user:$7$…`` line per user. ``$7$`` is
  the format ``mosquitto_passwd`` of Mosquitto 2.0 writes: PBKDF2-HMAC-SHA512, 101
  iterations, a 12-byte random salt, the salt and the 64-byte key in base64
  (``$7$101$<salt>$<key>``).
- ``acl``: Mosquitto's ACL file. Each station's user is ``site/line/station`` and may
  publish only under its own ``<prefix>/<site>/<line>/<station>/#`` and read only its
  own ``…/confirm`` and ``…/cmd/#``. The receivers' user reads ``<prefix>/#`` (shared
  subscriptions included) and writes confirmations and ``cmd/`` (gap requests); the
  deployer (``kanjian platform deploy`` / ``rollout watch``) writes only
  ``cmd/deploy_model``. Anything not granted is denied (Mosquitto denies by default
  once an ACL file is set).
- ``credentials/``: each user's password in plain text (mode 0600), one file each
  (``credentials/<site>/<line>/<station>.password``, ``credentials/<user>.password``)
  to hand to that station (``sync.mqtt.password_file``) or platform process. A
  password already there is kept, so adding a station changes no one else's.
- ``mosquitto.conf``: the lines that turn them on (include it from the broker's config).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from kanjian.platform.rollout import StationKey

#: the Mosquitto 2.0 defaults of ``mosquitto_passwd``
PBKDF2_ITERATIONS = 101
SALT_BYTES = 12

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def hash_password(
    password: str, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS
) -> str:
    """``$7$<iterations>$<salt b64>$<key b64>``: one password in Mosquitto's ``$7$`` format."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    key = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"


def check_password(password: str, hashed: str) -> bool:
    """Whether ``password`` matches a ``$7$`` hash (as Mosquitto checks it)."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[1] != "7":
        raise ValueError("not a $7$ (PBKDF2-SHA512) Mosquitto password hash")
    salt, want = base64.b64decode(parts[3]), base64.b64decode(parts[4])
    got = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, int(parts[2]), len(want))
    return hmac.compare_digest(got, want)


@dataclass(frozen=True)
class BrokerUsers:
    """The platform's own broker users (station users are ``site/line/station``)."""

    receiver: str = "kanjian-receiver"
    deployer: str = "kanjian-deployer"


def read_station_list(text: str) -> tuple[StationKey, ...]:
    """``site/line/station`` per line (blank lines and ``#`` comments ignored), sorted, once."""
    keys = set()
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split("/")
        if len(parts) != 3 or not all(_NAME.match(p) for p in parts):
            raise ValueError(f"line {n}: {line!r}: write site/line/station, each 1 to 64 "
                             "letters, digits, _ . -")  # fmt: skip
        keys.add((parts[0], parts[1], parts[2]))
    if not keys:
        raise ValueError("no stations in the list")
    return tuple(sorted(keys))


def station_user(key: StationKey) -> str:
    """A station's broker user name: ``site/line/station``."""
    return "/".join(key)


def acl_text(
    stations: tuple[StationKey, ...], users: BrokerUsers, prefix: str = "kanjian/v1"
) -> str:
    """The ACL file: per-user grants, nothing for anyone else."""
    out = [
        "# kanjian broker ACL, written by `kanjian platform acl`: do not edit, run it again.",
        "# Only what is granted here is allowed (no anonymous rules).",
        "",
        f"user {users.receiver}",
        f"topic read {prefix}/#",
        f"topic write {prefix}/+/+/+/confirm",
        f"topic write {prefix}/+/+/+/cmd/#",
        "",
        f"user {users.deployer}",
        f"topic write {prefix}/+/+/+/cmd/deploy_model",
    ]
    for key in stations:
        base = f"{prefix}/{station_user(key)}"
        out += ["", f"user {station_user(key)}", f"topic write {base}/#",
                f"topic read {base}/confirm", f"topic read {base}/cmd/#"]  # fmt: skip
    return "\n".join(out) + "\n"


def _secret_file(path: Path, rotate: bool) -> tuple[str, bool]:
    """The password kept in ``path`` (made if absent or ``rotate``); whether it is new."""
    if path.is_file() and not rotate:
        old = path.read_text(encoding="utf-8").strip()
        if old:
            return old, False
    password = secrets.token_urlsafe(24)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(password + "\n")
    os.chmod(path, 0o600)
    return password, True


@dataclass(frozen=True)
class AclFiles:
    """What :func:`write_acl` wrote.

    Attributes:
        passwd, acl, conf: the password file, the ACL file, the config lines.
        credentials: user -> the file holding its password.
        new_users: users whose password was made now.
    """

    passwd: Path
    acl: Path
    conf: Path
    credentials: dict[str, Path]
    new_users: tuple[str, ...]


def write_acl(
    out: Path, stations: tuple[StationKey, ...], users: BrokerUsers = BrokerUsers(),
    prefix: str = "kanjian/v1", rotate: bool = False,
) -> AclFiles:  # fmt: skip
    """Write ``passwd``, ``acl``, ``mosquitto.conf`` and ``credentials/`` into ``out``."""
    if "+" in prefix or "#" in prefix:
        raise ValueError(f"topic prefix {prefix!r} must not hold wildcards")
    out.mkdir(parents=True, exist_ok=True)
    creds = out / "credentials"
    files = {users.receiver: creds / f"{users.receiver}.password",
             users.deployer: creds / f"{users.deployer}.password"}  # fmt: skip
    for key in stations:
        files[station_user(key)] = creds.joinpath(*key[:2], f"{key[2]}.password")
    lines, new = [], []
    for user, path in files.items():
        password, made = _secret_file(path, rotate)
        lines.append(f"{user}:{hash_password(password)}")
        if made:
            new.append(user)
    passwd = out / "passwd"
    fd = os.open(passwd, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    acl = out / "acl"
    acl.write_text(acl_text(stations, users, prefix), encoding="utf-8")
    conf = out / "mosquitto.conf"
    conf.write_text(
        "# include from the broker's config (Mosquitto 2.0): every client logs in, each\n"
        "# user may use only the topics the ACL grants it\n"
        f"allow_anonymous false\npassword_file {passwd.resolve()}\nacl_file {acl.resolve()}\n",
        encoding="utf-8",
    )
    return AclFiles(passwd, acl, conf, files, tuple(new))
