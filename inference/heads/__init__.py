"""Model task heads behind a registry keyed by the task's name.

``head_for(model.info.task)`` gives the :class:`TaskHead` that preprocesses, decodes,
judges, golden-checks, stores and draws for that task. The built-in heads
(``detect``, ``segment``, ``classify``, ``anomaly``) register themselves when this package is
imported; a new task is one module with a :class:`TaskHead` subclass and a
:func:`register_head` call (see ``docs/extending.md``).
"""

from kanjian.inference.heads import anomaly, classify, detect, segment  # noqa: F401  (they register)
from kanjian.inference.heads.base import (
    Decoded,
    DecodeThresholds,
    Keep,
    TaskHead,
    UnknownTaskError,
    find_head,
    head_for,
    known_tasks,
    register_head,
    store_fields,
    task_columns,
    unknown_task_message,
    unregister_head,
)

__all__ = [
    "DecodeThresholds",
    "Decoded",
    "Keep",
    "TaskHead",
    "UnknownTaskError",
    "find_head",
    "head_for",
    "known_tasks",
    "register_head",
    "store_fields",
    "task_columns",
    "unknown_task_message",
    "unregister_head",
]
