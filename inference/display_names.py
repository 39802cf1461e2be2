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
#: longest language tag, characters (BCP 47's longest common tags fit in 35)
MAX_TAG = 35
#: most languages a model's names come in (a screen offers a handful)
MAX_LANGS = 16
#: most names in one language (a detector with more classes than this is not a line's)
MAX_CLASSES = 1000
#: longest display name, characters (a label on a picture, a word on a button)
MAX_NAME = 64
#: problems listed in one message before "... and N more"
_SHOWN = 20


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
        NamesError: over :data:`MAX_LANGS` languages, a bad or overlong (:data:`MAX_TAG`)
            language tag, over :data:`MAX_CLASSES` names in one language, an unknown
            class, an empty or overlong (:data:`MAX_NAME`) name, or one with control
            characters; every problem is listed (the first :data:`_SHOWN` of them).
    """
    if len(names) > MAX_LANGS:
        raise NamesError(
            f"{len(names)} languages: at most {MAX_LANGS}; keep the ones the screens use"
        )
    problems: list[str] = []
    known = set(class_names) if class_names is not None else None
    out: DisplayNames = {}
    for lang, per_class in names.items():
        if isinstance(lang, str) and len(lang) > MAX_TAG:
            problems.append(
                f"language {lang[:MAX_TAG]!r}...: a tag is at most {MAX_TAG} characters"
            )
            continue
        if not isinstance(lang, str) or not _LANG.match(lang):
            problems.append(f"language {lang!r} must be a tag like 'zh', 'en' or 'zh-TW'")
            continue
        if not isinstance(per_class, Mapping):
            problems.append(f"{lang}: expected a mapping class_name -> name")
            continue
        if len(per_class) > MAX_CLASSES:
            problems.append(f"{lang}: {len(per_class)} names, at most {MAX_CLASSES}")
            continue
        clean: dict[str, str] = {}
        for cls, name in per_class.items():
            if known is not None and cls not in known:
                problems.append(f"{lang}: the model has no class {str(cls)[:MAX_NAME]!r}")
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
        listed = ", ".join(list(class_names or ())[:50]) + (
            ", ..." if len(known or ()) > 50 else ""
        )
        tail = f"; the model's classes are: {listed}" if unknown else ""
        more = f"; and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
        raise NamesError("; ".join(problems[:_SHOWN]) + more + tail)
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
