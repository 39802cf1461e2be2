"""Logging for the long-running commands: rich in a terminal, plain lines for journald.

Under systemd, stdout and stderr go to the journal, which stamps every line with
its own time, unit and PID, and reads a ``<N>`` prefix as the line's priority
(``SyslogLevelPrefix=``, on by default). Rich's columns (its own timestamp, a
level, wrapping at 80 characters) would split one message over several journal
entries, so when ``JOURNAL_STREAM`` names our stderr, each record is one plain
line ``<priority>logger: message``, and the commands' consoles stop wrapping.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable

from rich.console import Console


class JournalFormatter(logging.Formatter):
    """``<priority>logger: message``, a traceback's lines joined into the same entry."""

    def format(self, record: logging.LogRecord) -> str:
        # syslog priorities, as sd-daemon(3)'s SD_CRIT .. SD_DEBUG
        lvl = record.levelno
        prio = 2 if lvl > logging.ERROR else 3 if lvl > logging.WARNING else 4
        if lvl <= logging.INFO:
            prio = 6 if lvl == logging.INFO else 7
        text = f"{record.name}: {record.getMessage()}"
        if record.exc_info:
            text += " | " + self.formatException(record.exc_info).replace("\n", " | ")
        return f"<{prio}>{text}"


def stderr_is_journal() -> bool:
    """``True`` when systemd connected our stderr to the journal (``JOURNAL_STREAM``
    is ``device:inode`` of that stream; a child that inherited the variable but
    not the stream must not believe it)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(v) for v in value.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def setup_logging(verbose: bool, console: Console, plain: Iterable[Console] = ()) -> bool:
    """Route logging to ``console`` (rich) or, under journald, to plain stderr lines.

    Args:
        verbose: DEBUG instead of INFO.
        console: the command's stderr console (rich handler in a terminal).
        plain: the command's consoles, set to not wrap or colour under journald.

    Returns:
        whether the journal format was chosen.
    """
    level = logging.DEBUG if verbose else logging.INFO
    journal = stderr_is_journal()
    if not journal:
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=console, show_path=False)
        logging.basicConfig(level=level, format="%(message)s", handlers=[handler], force=True)
        return False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JournalFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for c in (console, *plain):
        c.soft_wrap = True  # one message, one journal entry
        c.no_color = True
    return True
