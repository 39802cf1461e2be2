"""``kanjian doctor``'s look at the screen's own font: the two faces of "Kanjian Sans"
(``static/fonts``) are there, are the bytes their README records, and have a glyph for
every CJK character of ``charset.txt`` (the screen's Chinese) and every printable ASCII
one (its English).

The glyph check asks FreeType through Pillow (both in the runtime): a character the
face lacks renders as the face's ``.notdef`` box, so each character of the charset is
drawn once and compared with it (~0.2 s a face).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from kanjian.station.doctor_types import Check

FONTS = Path(__file__).resolve().parent / "static" / "fonts"
FACES = ("KanjianSans-Regular.woff2", "KanjianSans-Bold.woff2")
#: CJK ideographs, CJK punctuation, full-width forms: what the system's DejaVu lacks
CJK = re.compile(r"[\u2e80-\u9fff\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef]")
_RECORDED = re.compile(r"\|\s*`(?P<file>[\w-]+\.woff2)`\s*\|.*\|\s*`(?P<sha>[0-9a-f]{64})`\s*\|")


def read_charset(path: Path) -> list[str]:
    """The characters of ``charset.txt`` (``U+XXXX`` at the start of each line)."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            out.append(chr(int(line.split(maxsplit=1)[0][2:], 16)))
    return out


def _missing_glyphs(face: Path, chars: list[str]) -> list[str] | None:
    """The characters of ``chars`` that ``face`` draws as its ``.notdef`` box (``None``:
    that cannot be told, the face's ``.notdef`` being empty)."""
    from PIL import ImageFont

    font = ImageFont.truetype(str(face), 16)
    notdef = bytes(font.getmask(chr(0x10FFFD)))  # a private-use code point: no face has it
    if not any(notdef):
        return None
    return [c for c in chars if not c.isspace() and bytes(font.getmask(c)) == notdef]


def font_checks(fonts: Path = FONTS) -> list[Check]:
    """One row per face (present, recorded sha256, glyphs for the charset's CJK), plus
    the system's own CJK fonts as a fact (a kiosk browser on the station needs none)."""
    import shutil
    import subprocess

    out: list[Check] = []
    charset_path = fonts / "charset.txt"
    readme = fonts / "README.md"
    try:
        chars = read_charset(charset_path)
    except (OSError, ValueError) as e:
        fix = "reinstall kanjian: the screen's font files are part of it"
        return [Check("screen", "font", "fail", f"{charset_path}: {e}", fix)]
    cjk = [c for c in chars if CJK.match(c)]  # the screen in Chinese
    ascii_ = [c for c in chars if "!" <= c <= "~"]  # the screen in English
    recorded = {}
    if readme.is_file():
        recorded = {
            m["file"]: m["sha"] for m in _RECORDED.finditer(readme.read_text(encoding="utf-8"))
        }
    for name in FACES:
        face = fonts / name
        if not face.is_file():
            out.append(
                Check(
                    "screen",
                    name,
                    "warn",
                    f"{face} is missing: the screen shows Chinese as empty boxes",
                    "reinstall kanjian (the font ships with it)",
                )
            )
            continue
        sha = hashlib.sha256(face.read_bytes()).hexdigest()
        same = recorded.get(name) == sha
        try:
            missing = _missing_glyphs(face, cjk + ascii_)
        except OSError as e:
            out.append(Check("screen", name, "warn", f"{face} does not load: {e}"))
            continue
        if missing:
            shown = "".join(missing[:20]) + ("…" if len(missing) > 20 else "")
            out.append(
                Check(
                    "screen",
                    name,
                    "warn",
                    f"lacks {len(missing)} of the {len(cjk)} CJK and {len(ascii_)} ASCII "
                    f"characters of charset.txt: {shown}",
                    "rebuild the font (static/fonts/README.md)",
                )
            )
            continue
        glyphs = (
            "glyphs not checked"
            if missing is None
            else f"glyphs for all {len(cjk)} CJK (zh) and {len(ascii_)} ASCII (en) characters"
        )
        out.append(
            Check(
                "screen",
                name,
                "ok" if same else "warn",
                f"{glyphs} of charset.txt; sha256 {sha[:12]}… "
                + ("as recorded" if same else "NOT the one static/fonts/README.md records"),
                "" if same else "rebuild it (static/fonts/README.md) or reinstall kanjian",
            )
        )
    fc = shutil.which("fc-list")
    if fc is not None:
        try:
            r = subprocess.run(
                [fc, ":lang=zh", "family"], capture_output=True, text=True, timeout=10
            )
            n = len({ln for ln in r.stdout.splitlines() if ln.strip()})
            text = f"{n} system font families with Chinese (the screen uses its own)"
        except (OSError, subprocess.TimeoutExpired):
            text = "fc-list does not answer (the screen uses its own font)"
        out.append(Check("screen", "system fonts", "info", text))
    return out


__all__ = ["FACES", "FONTS", "font_checks", "read_charset"]
