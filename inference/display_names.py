"""Display names of a model's classes, per language: what people read instead of class ids.

A model's classes are identifiers chosen when its data was labelled
(``rolled-in_scale``); a line worker reads ``压入氧化皮``. A bundle's manifest may carry
``display_names: {lang: {class_name: name}}`` (written by ``kanjian train --names-zh``
or ``--names FILE``), a station may override them (``PUT
/api/models/{sha256}/display-names``, ``kanjian model names set``), and the screen and
the pictures drawn for it show them. A class without a name keeps its class name.

Languages are BCP 47 tags as the screen uses them (``zh``, ``en``, ``zh-TW``).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: {language: {class_name: display name}}
DisplayNames = dict[str, dict[str, str]]

LANG_PATTERN = r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$"
_LANG = re.compile(LANG_PATTERN)
#: longest display name, characters (a label on a picture, a word on a button)
MAX_NAME = 64


class NamesError(ValueError):
    """Display names that cannot be used; the message names the entry and the fix."""


def check_display_names(
    names: Mapping[str, Mapping[str, str]], class_names: Sequence[str] | None = None
) -> DisplayNames:
    """``names`` as a plain, validated, sorted dict.

    Args:
        names: {language: {class_name: display name}}.
        class_names: the model's classes; a name for any other class is refused
            (a misspelt class would silently keep its id on the screen). ``None``:
            not checked.

    Raises:
        NamesError: a bad language tag, an unknown class, an empty or overlong name,
            or one with control characters; every problem is listed.
    """
    problems: list[str] = []
    known = set(class_names) if class_names is not None else None
    out: DisplayNames = {}
    for lang, per_class in names.items():
        if not isinstance(lang, str) or not _LANG.match(lang):
            problems.append(f"language {lang!r} must be a tag like 'zh', 'en' or 'zh-TW'")
            continue
        if not isinstance(per_class, Mapping):
            problems.append(f"{lang}: expected a mapping class_name -> name")
            continue
        clean: dict[str, str] = {}
        for cls, name in per_class.items():
            if known is not None and cls not in known:
                problems.append(f"{lang}: the model has no class {cls!r}")
                continue
            if not isinstance(name, str) or not name.strip():
                problems.append(f"{lang}.{cls}: the name must be non-empty text")
                continue
            name = name.strip()
            if len(name) > MAX_NAME:
                problems.append(f"{lang}.{cls}: the name is over {MAX_NAME} characters")
            elif any(unicodedata.category(c).startswith("C") for c in name):
                problems.append(f"{lang}.{cls}: the name has control characters")
            else:
                clean[str(cls)] = name
        if clean:
            out[lang] = dict(sorted(clean.items()))
    if problems:
        unknown = class_names is not None and any("has no class" in p for p in problems)
        tail = f"; the model's classes are: {', '.join(class_names or ())}" if unknown else ""
        raise NamesError("; ".join(problems) + tail)
    return dict(sorted(out.items()))


def merge_names(
    base: Mapping[str, Mapping[str, str]], top: Mapping[str, Mapping[str, str]]
) -> DisplayNames:
    """``base`` with ``top``'s names over it, class by class."""
    out: DisplayNames = {lang: dict(m) for lang, m in base.items()}
    for lang, m in top.items():
        out.setdefault(lang, {}).update(m)
    return {lang: dict(sorted(m.items())) for lang, m in sorted(out.items()) if m}


def parse_pairs(text: str, what: str = "names") -> dict[str, str]:
    """``"crazing=龟裂,scratches=划痕"`` -> ``{"crazing": "龟裂", "scratches": "划痕"}``.

    Commas inside a name are not supported here; use a names file. Full-width commas
    (，) separate pairs too, so a list typed with a Chinese input method works.

    Raises:
        NamesError: a pair without ``=``, or a class given twice.
    """
    out: dict[str, str] = {}
    for pair in re.split(r"[,，]", text):
        if not pair.strip():
            continue
        cls, sep, name = pair.partition("=")
        cls, name = cls.strip(), name.strip()
        if not sep or not cls or not name:
            raise NamesError(f"{what}: {pair.strip()!r} must look like class=name")
        if cls in out:
            raise NamesError(f"{what}: class {cls!r} is named twice")
        out[cls] = name
    return out


def load_names_file(path: Path) -> DisplayNames:
    """A names file: YAML or JSON ``{lang: {class_name: name}}``.

    Raises:
        NamesError: unreadable, or not that shape (the message names the file).
    """
    import yaml  # JSON is YAML too

    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise NamesError(f"{path}: cannot read the names file: {e}") from e
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        example = json.dumps({"zh": {"scratches": "划痕"}}, ensure_ascii=False)
        raise NamesError(f"{path}: expected {{language: {{class_name: name}}}}, e.g. {example}")
    try:
        return check_display_names(
            {str(k): {str(c): n for c, n in v.items()} for k, v in raw.items()}
        )
    except NamesError as e:
        raise NamesError(f"{path}: {e}") from e


def label_names(names: Mapping[str, Mapping[str, str]], lang: str) -> dict[str, str]:
    """The names for ``lang`` (``zh-CN`` falls back to ``zh``); empty when none."""
    if lang in names:
        return dict(names[lang])
    base = lang.split("-", 1)[0]
    return dict(names.get(base, {}))
