"""File sources: an image folder and a video file, replayed without loss."""

from __future__ import annotations

import fnmatch
import os
import re
import stat
from pathlib import Path

import cv2
import numpy as np

from kanjian.camera.config import FolderSourceConfig, VideoSourceConfig
from kanjian.camera.frame import Frame, FrameFailure
from kanjian.camera.imagefile import ImageFileError, decode_image_file, printable_path
from kanjian.camera.registry import register_source
from kanjian.camera.source import SourceError, SourceStatus, StatusBook


def _natural_key(name: str) -> tuple[str | int, ...]:
    # re.split with a group alternates text, number, text, ...: even slots are
    # always str and odd slots always int, so keys compare without type errors.
    parts = re.split(r"(\d+)", name.lower())
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts))


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:  # a dangling link: the link's own time
        return path.lstat().st_mtime_ns


def list_images(config: FolderSourceConfig) -> list[Path]:
    """The folder entries ``config`` selects (by name: extension and pattern), in its order.

    Every selected entry is listed, whatever it is: a dangling symbolic link or a
    folder named ``x.jpg`` gets its ERROR row from :class:`FolderSource` rather
    than disappearing from the run unseen.

    Raises:
        SourceError: the folder does not exist or no entry matches.
    """
    folder = config.path
    if not folder.is_dir():
        raise SourceError(f"image folder {folder} does not exist or is not a folder")
    files = [
        p
        for p in folder.iterdir()
        if p.suffix.lower() in config.extensions and fnmatch.fnmatchcase(p.name, config.pattern)
    ]
    if not files:
        raise SourceError(
            f"no file in {folder} matches pattern {config.pattern!r} with extensions "
            f"{', '.join(config.extensions)}"
        )
    if config.order == "natural":
        files.sort(key=lambda p: (_natural_key(p.name), p.name))
    elif config.order == "mtime":
        files.sort(key=lambda p: (_mtime_ns(p), p.name))
    else:
        files.sort(key=lambda p: p.name)
    return files


class FolderSource:
    """The images of one folder, one frame per file, in a fixed order.

    The file list is taken once, at construction; every entry in it gives exactly
    one frame or failure. An unreadable, truncated or undecodable file, a dangling
    symbolic link, or an entry that is no regular file (a folder, a FIFO: never
    opened, so a FIFO cannot block) gives a :class:`FrameFailure`
    (``missed=False``) whose ``reason`` and ``uri`` name the entry; reading goes
    on with the next one. ``uri`` is the path through
    :func:`~kanjian.camera.imagefile.printable_path` (a name that is not UTF-8
    keeps its bad bytes as ``\\xNN``). ``read()`` never waits on anything but the disk.
    """

    def __init__(self, config: FolderSourceConfig, source_id: str = "cam0") -> None:
        self._config = config
        self._files = list_images(config)
        self._pos = 0
        self._book = StatusBook(source_id)

    @property
    def source_id(self) -> str:
        return self._book.source_id

    @property
    def files(self) -> tuple[Path, ...]:
        """The files this source replays, in order."""
        return tuple(self._files)

    def read(self) -> Frame | FrameFailure | None:
        if self._book.state == "ended":
            return None
        if self._pos >= len(self._files):
            if not self._config.loop:
                self._book.set_state("ended")
                return None
            self._pos = 0
        path = self._files[self._pos]
        self._pos += 1
        uri = printable_path(path)
        problem = _not_a_file(path)
        if problem is not None:
            return self._book.failure(f"{uri}: {problem}", uri, missed=False)
        try:
            image = decode_image_file(path)
        except ImageFileError as exc:
            return self._book.failure(str(exc), uri, missed=False)
        return self._book.frame(image, uri)

    def close(self) -> None:
        self._book.set_state("ended")

    def status(self) -> SourceStatus:
        return self._book.snapshot()


def _not_a_file(path: Path) -> str | None:
    """Why the folder entry ``path`` cannot be read as an image file, or ``None``."""
    try:
        st = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            target = printable_path(os.readlink(path))
            return f"dangling symbolic link (to {target}, which does not exist)"
        return None  # gone since the folder was listed: the read says so
    except OSError as exc:  # a loop of links, no permission on a folder on the way
        return f"cannot reach the file: {exc.strerror or exc}"
    if stat.S_ISREG(st.st_mode):
        return None
    what = "a folder" if stat.S_ISDIR(st.st_mode) else "a special file (FIFO, socket, device)"
    return f"not a regular file: {what}"


class VideoSource:
    """Every frame of a video file, in order; ``uri`` is ``path#frame=N`` (0-based in the file).

    When the file yields fewer frames than its container lists (cut short, or
    frames FFmpeg could not decode), one :class:`FrameFailure` says so at the
    end; without ``loop`` the source then stops in state ``error``. Counts that
    FFmpeg estimates from duration × fps (e.g. Matroska) are taken at face value.
    ``read()`` never waits on anything but the disk.
    """

    def __init__(self, config: VideoSourceConfig, source_id: str = "cam0") -> None:
        self._config = config
        self._book = StatusBook(source_id)
        if not config.path.is_file():
            raise SourceError(f"video file {config.path} does not exist or is not a file")
        self._cap: cv2.VideoCapture | None = self._open()
        self._index = 0

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(str(self._config.path), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            raise SourceError(
                f"cannot open video {self._config.path}: OpenCV's FFmpeg backend cannot read it"
            )
        self._expected = max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT)))
        return cap

    @property
    def source_id(self) -> str:
        return self._book.source_id

    def read(self) -> Frame | FrameFailure | None:
        if self._cap is None:
            return None
        ok, image = self._cap.read()
        if ok and image is not None:
            uri = f"{self._config.path}#frame={self._index}"
            self._index += 1
            return self._book.frame(np.ascontiguousarray(image, dtype=np.uint8), uri)
        return self._end_of_file()

    def _end_of_file(self) -> Frame | FrameFailure | None:
        assert self._cap is not None
        self._cap.release()
        self._cap = None
        got, expected = self._index, self._expected
        short = expected > 0 and got < expected
        uri = f"{self._config.path}#frame={got}"
        if short or got == 0:
            listed = f"of {expected} frames its container lists" if expected else "frames"
            reason = (
                f"video {self._config.path} ended after {got} {listed} "
                "(file cut short or frames undecodable)"
            )
            failure = self._book.failure(reason, uri, missed=False)
            if not (self._config.loop and got > 0):
                self._book.set_state("error", reason)
            else:
                self._restart()  # on failure it sets state ``error`` itself
            return failure
        if not self._config.loop:
            self._book.set_state("ended")
            return None
        if not self._restart():
            return self._book.failure(self._book.snapshot().last_error or "", uri, missed=False)
        return self.read()

    def _restart(self) -> bool:
        """Reopen the file for the next loop; ``False`` (state ``error``) if it is gone."""
        try:
            self._cap = self._open()
        except SourceError as exc:
            self._book.set_state("error", str(exc))
            return False
        self._index = 0
        return True

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        if self._book.state != "error":
            self._book.set_state("ended")

    def status(self) -> SourceStatus:
        return self._book.snapshot()


register_source("folder", FolderSourceConfig, FolderSource)
register_source("video", VideoSourceConfig, VideoSource)
