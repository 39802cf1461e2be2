"""A real HTTP MJPEG camera that replays JPEG files in a loop at a set frame rate.

Stations that read it (``camera: {kind: stream, url: ...}``, ``policy: latest``) judge a
few frames a second instead of as many as the CPU allows (a looping folder source
runs flat out), and every frame is one of the files, byte for byte: which verdict
each file gets is known beforehand. Each client gets its own stream, starting at the
file the shared clock points at.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

BOUNDARY = "kanjianframe"


class ImageStream:
    """``http://127.0.0.1:<port>/stream.mjpg`` serving ``files`` in turn at ``fps``.

    Args:
        files: JPEG files, shown in this order, then again from the first.
        fps: frames per second per client.
    """

    def __init__(self, files: list[Path], fps: float) -> None:
        frames = [p.read_bytes() for p in files]
        started = time.monotonic()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                if self.path != "/stream.mjpg":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.end_headers()
                try:
                    while True:
                        index = int((time.monotonic() - started) * fps)
                        data = frames[index % len(frames)]
                        self.wfile.write(
                            f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                            f"Content-Length: {len(data)}\r\n\r\n".encode()
                            + data
                            + b"\r\n"
                        )
                        self.wfile.flush()
                        time.sleep(max(0.0, started + (index + 1) / fps - time.monotonic()))
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/stream.mjpg"

    def start(self) -> ImageStream:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
