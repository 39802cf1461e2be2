"""Make the screen's font, "Kanjian Sans": Noto Sans CJK SC, subset to what kanjian shows.

A fresh Debian has no CJK font, so the app ships its own (appliance_api/http/static/fonts,
see the README there). This script makes those files from Debian's ``fonts-noto-cjk``
package (OFL-1.1), reproducibly: the same source files, the same ``charset.txt`` and the
same fontTools and brotli versions (:data:`PINNED`, pinned in pyproject's ``test``
extra) give the same bytes, whatever else the repository holds.

    apt-get download fonts-noto-cjk            # 1:20220127+repack1-1 (Noto Sans CJK 2.004)
    dpkg-deb -x fonts-noto-cjk_*.deb /tmp/noto
    .venv/bin/python scripts/make_font.py --source /tmp/noto/usr/share/fonts/opentype/noto

The characters kept are the ones listed in ``fonts/charset.txt`` (committed, one code
point a line), and only those. ``--update-charset`` adds to that file, never removes:
ASCII and Latin-1, common punctuation and symbols, CJK punctuation and full-width forms,
the 6,763 hanzi of GB 2312 (level 1, the 3,755 common ones, and level 2: display names
engineers type use some, e.g. 褶 of 褶皱; both levels cost 2.1 MB for two weights,
level 1 alone 1.2 MB), and every CJK character in the app's texts (:func:`app_cjk`: the
static files, the string literals of the Python sources, the demo bundle's manifest).
``tests/test_font.py`` fails, naming the characters, when the app's texts use one that
``charset.txt`` or the font lacks: run ``--update-charset``, then this script again.

Needs fontTools and brotli (both in the ``test`` extra, pinned to :data:`PINNED`).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import tokenize
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FONTS = REPO / "appliance_api" / "http" / "static" / "fonts"
CHARSET = FONTS / "charset.txt"
README = FONTS / "README.md"
FAMILY = "Kanjian Sans"
#: the versions that made the committed files: another fontTools subsets or another
#: brotli compresses differently, so other bytes (also in fonts/README.md and pyproject)
PINNED = {"fonttools": "4.68.0", "brotli": "1.2.1"}
#: the face of the collection to take (index 2 of Debian's .ttc files)
SOURCE_FACE = "Noto Sans CJK SC"
#: Debian bookworm's fonts-noto-cjk 1:20220127+repack1-1 (Noto Sans CJK 2.004)
SOURCES = {
    "Regular": (
        "NotoSansCJK-Regular.ttc",
        "b76b0433203017ca80401b2ee0dd69350349871c4b19d504c34dbdd80541690a",
    ),
    "Bold": (
        "NotoSansCJK-Bold.ttc",
        "faa5f3656a78b2e2d450d27fe8382c778bc2b6bb5ea29c986664a6a435056ceb",
    ),
}
#: where the app keeps its words: static files and Python sources of these folders
TEXT_FOLDERS = ("appliance_api", "station", "inference", "camera", "training", "platform")
DEMO_MANIFEST = REPO / "station" / "demo" / "model" / "manifest.json"


def _is_cjk(c: str) -> bool:
    o = ord(c)
    return (
        0x2E80 <= o <= 0x9FFF  # radicals, CJK punctuation, kana, unified ideographs
        or 0xF900 <= o <= 0xFAFF  # compatibility ideographs
        or 0xFE30 <= o <= 0xFE4F  # compatibility forms
        or 0xFF00 <= o <= 0xFFEF  # full-width forms
    )


def gb2312() -> list[str]:
    """The 6,763 hanzi of GB 2312: level 1 (rows 16-55, 3,755 common ones, by pinyin)
    and level 2 (rows 56-87, 3,008, by radical)."""
    out = []
    for hi in range(0xB0, 0xF8):
        for lo in range(0xA1, 0xFF):
            try:
                out.append(bytes((hi, lo)).decode("gb2312"))
            except UnicodeDecodeError:  # row 55 ends at 0xD7F9; rows 88-94 are empty
                continue
    return out


def _py_strings(text: str) -> str:
    """The string literals of a Python source: what it may show (comments are not)."""
    try:
        return " ".join(
            t.string
            for t in tokenize.generate_tokens(io.StringIO(text).readline)
            if t.type == tokenize.STRING
        )
    except (tokenize.TokenError, SyntaxError):  # not Python after all: all of it
        return text


def app_texts() -> Iterable[tuple[Path, str]]:
    """The texts the screen or the pictures may show: the static files, the string
    literals of the Python sources, the demo manifest (no docs, no comments)."""
    for folder in TEXT_FOLDERS:
        for p in sorted((REPO / folder).rglob("*")):
            if "vendor" in p.parts or "fonts" in p.parts or not p.is_file():
                continue
            if p.suffix in (".js", ".html", ".css", ".json"):
                yield p, p.read_text(encoding="utf-8", errors="replace")
            elif p.suffix == ".py":
                yield p, _py_strings(p.read_text(encoding="utf-8", errors="replace"))
    yield DEMO_MANIFEST, DEMO_MANIFEST.read_text(encoding="utf-8")


def app_cjk() -> set[str]:
    """Every CJK character in the app's own texts."""
    return {c for _, text in app_texts() for c in text if _is_cjk(c)}


def wanted() -> set[str]:
    """What ``--update-charset`` makes sure ``charset.txt`` holds."""
    keep = {chr(o) for o in range(0x20, 0x7F)}  # ASCII
    keep |= {chr(o) for o in range(0xA0, 0x100)}  # Latin-1: ° ± × · é ...
    keep |= {chr(o) for o in range(0x2010, 0x2028)}  # dashes, quotes, bullet, ellipsis
    keep |= set("‰′″←↑→↓↔−≈≠≤≥■□▲△▶▼▽◀◆◇○●★☆✓✔✗✘")
    keep |= {chr(o) for o in range(0x3000, 0x3040)}  # CJK punctuation: 、。「」【】〜
    keep |= {chr(o) for o in range(0xFF01, 0xFF5F)}  # full-width forms: ，：；（）！？
    keep |= {"￥"}
    keep |= set(gb2312())
    keep |= app_cjk()
    return keep


def read_charset(path: Path = CHARSET) -> list[str]:
    """The characters of a ``charset.txt``, sorted: the ``U+XXXX`` that starts each line
    (the character after it is for people; ``#`` starts a comment line)."""
    out: set[str] = set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        word = line.split(maxsplit=1)[0]
        if not word.startswith("U+"):
            raise ValueError(f"{path}:{n}: expected U+XXXX, got {line!r}")
        out.add(chr(int(word[2:], 16)))
    return sorted(out)


def write_charset(chars: Iterable[str], path: Path = CHARSET) -> None:
    """Write ``chars`` one a line, by code point (a change is a line added)."""
    lines = [
        "# The characters of Kanjian Sans: scripts/make_font.py builds the font from this",
        "# file only. One code point a line, sorted; the character after it is for reading.",
        "# Add with: python scripts/make_font.py --update-charset (it never removes one).",
    ]
    for c in sorted(set(chars)):
        shown = f" {c}" if c.isprintable() and not c.isspace() else ""
        lines.append(f"U+{ord(c):04X}{shown}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def update_charset(path: Path = CHARSET) -> list[str]:
    """Add what :func:`wanted` has and ``path`` lacks; returns the added characters."""
    have = set(read_charset(path)) if path.is_file() else set()
    added = sorted(wanted() - have)
    if added or not path.is_file():
        write_charset(have | set(added), path)
    return added


def version_problems() -> list[str]:
    """How the installed fontTools and brotli differ from :data:`PINNED` (empty: same)."""
    out = []
    for dist, want in PINNED.items():
        try:
            got = metadata.version(dist)
        except metadata.PackageNotFoundError:
            got = "not installed"
        if got != want:
            out.append(f"{dist} {got}, not the pinned {want}")
    return out


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _rename(font: object, style: str) -> None:
    """Give the subset its own family name (a modified font should not pass for the
    original), keeping the copyright and licence records."""
    from fontTools.ttLib import TTFont

    assert isinstance(font, TTFont)
    name = font["name"]
    version = name.getDebugName(5) or ""
    upstream = f"{SOURCE_FACE} {style}"
    ps = f"{FAMILY.replace(' ', '')}-{style}"
    records = {
        1: FAMILY,
        2: style,
        3: f"{ps}; subset of {upstream} {version.split(';')[0]}",
        4: f"{FAMILY} {style}",
        6: ps,
    }
    for rec in list(name.names):
        if rec.nameID in (16, 17, 18, 21, 22):  # typographic names of the original family
            name.removeNames(nameID=rec.nameID)
    for nid, text in records.items():
        name.removeNames(nameID=nid)
        name.setName(text, nid, 3, 1, 0x409)  # Windows, Unicode BMP, English
        name.setName(text, nid, 1, 0, 0)  # Mac Roman: what some readers take first
    if "CFF " in font:
        cff = font["CFF "].cff
        cff.fontNames = [ps]
        top = cff.topDictIndex[0]
        top.FamilyName, top.FullName = FAMILY, f"{FAMILY} {style}"


def subset(ttc: Path, style: str, chars: list[str], out: Path) -> int:
    """Write the ``style`` face of ``ttc`` subset to ``chars`` as WOFF2; returns glyphs."""
    from fontTools import subset as ft_subset
    from fontTools.ttLib import TTCollection

    coll = TTCollection(str(ttc), recalcTimestamp=False, lazy=False)
    font = next(f for f in coll.fonts if f["name"].getDebugName(1) == SOURCE_FACE)
    options = ft_subset.Options()
    options.flavor = "woff2"
    options.hinting = False  # CFF hints: bytes the screen's sizes do not need
    options.desubroutinize = True  # brotli compresses plain charstrings better
    options.layout_features = ["kern", "liga", "ccmp", "palt"]  # no locl: SC forms only
    options.name_IDs = ["*"]
    options.name_languages = ["*"]
    options.notdef_outline = True
    options.recalc_timestamp = False
    sub = ft_subset.Subsetter(options)
    sub.populate(text="".join(chars))
    sub.subset(font)
    _rename(font, style)
    font.flavor = "woff2"
    out.parent.mkdir(parents=True, exist_ok=True)
    font.save(str(out), reorderTables=True)
    return len(font.getGlyphOrder())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--source",
        type=Path,
        default=Path("/usr/share/fonts/opentype/noto"),
        help="folder holding NotoSansCJK-Regular.ttc and NotoSansCJK-Bold.ttc",
    )
    ap.add_argument("--out", type=Path, default=FONTS, help="where the .woff2 files go")
    ap.add_argument(
        "--update-charset",
        action="store_true",
        help=f"add the app's new characters to {CHARSET.name} (never removes one), say "
        "which, and stop: build the font with a second run",
    )
    ap.add_argument(
        "--any-source",
        action="store_true",
        help="take source files whose sha256 differs from the recorded ones (a newer "
        "Noto release): update SOURCES and the fonts' README after",
    )
    ap.add_argument(
        "--any-version",
        action="store_true",
        help="build with fontTools/brotli versions other than the pinned ones (other "
        "bytes): update PINNED, pyproject's pins and the fonts' README after",
    )
    args = ap.parse_args()
    if args.update_charset:
        added = update_charset()
        if not added:
            print(f"{CHARSET.name}: nothing to add ({len(read_charset())} characters)")
            return 0
        shown = "".join(c for c in added if c.isprintable() and not c.isspace())
        more = f" and {len(shown) - 200} more" if len(shown) > 200 else ""
        print(f"{CHARSET.name}: added {len(added)} characters: {shown[:200]}{more}")
        print("now build the font from it: python scripts/make_font.py --source ...")
        return 0
    if not CHARSET.is_file():
        print(f"error: {CHARSET} not found: run with --update-charset first", file=sys.stderr)
        return 2
    chars = read_charset()
    behind = "".join(sorted(app_cjk() - set(chars)))
    if behind:
        print(f"warning: {CHARSET.name} lacks {behind} of the app's texts: run "
              "--update-charset first", file=sys.stderr)  # fmt: skip
    problems = version_problems()
    if problems:
        fix = "builds anyway" if args.any_version else "(--any-version builds anyway)"
        print(
            f"{'WARNING' if args.any_version else 'error'}: {'; '.join(problems)}: other "
            f"versions make other bytes than the committed font {fix}",
            file=sys.stderr,
        )
        if not args.any_version:
            return 2
    print(f"{len(chars)} characters from {CHARSET.name}")
    recorded = README.read_text(encoding="utf-8") if README.is_file() else ""
    for style, (file, want) in SOURCES.items():
        src = args.source / file
        if not src.is_file():
            print(f"error: {src} not found; see this script's docstring", file=sys.stderr)
            return 2
        got = sha256(src)
        if got != want and not args.any_source:
            print(
                f"error: {src} has sha256 {got}, not the recorded {want}: another release "
                "makes other bytes (--any-source takes it anyway)",
                file=sys.stderr,
            )
            return 2
        out = args.out / f"KanjianSans-{style}.woff2"
        glyphs = subset(src, style, chars, out)
        digest = sha256(out)
        same = "the README's" if digest in recorded else "NEW: record it in the README"
        print(f"{out.name}: {glyphs} glyphs, {out.stat().st_size} bytes, sha256 {digest} ({same})")
        print(f"  from {src} (sha256 {got})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
