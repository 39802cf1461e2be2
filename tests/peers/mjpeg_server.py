"""A real HTTP MJPEG camera for tests: ``multipart/x-mixed-replace`` on 127.0.0.1.

Run with the venv interpreter (needs numpy and opencv)::

    python tests/peers/mjpeg_server.py --port 0 --fps 20 --tag 1

``GET /stream.mjpg`` streams JPEG frames drawn by ``pattern.draw(index, tag)``
where ``index`` counts frame ticks since the server started (shared by all
clients, so a fresh frame always carries a larger index than an old one). With
``--freeze-at K`` the index stops at K: the server keeps resending the same
JPEG, as relays do whose camera stalled. With ``--pulse`` it is a camera fired
by a hardware trigger line instead: it sends a frame only when it gets SIGUSR1
(the pulse), and ``index`` counts the pulses (1, 2, ...). When it listens it
prints ``READY <port>`` to stdout; it runs until killed.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pattern

BOUNDARY = "kanjianframe"
PULSES = [0]  # SIGUSR1 count under --pulse (the handler runs on the main thread)


def make_handler(
    fps: float, tag: int, started: float, freeze_at: int | None, pulse: bool = False
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass  # keep test output clean

        def do_GET(self) -> None:
            if self.path != "/stream.mjpg":
                self.send_error(404, "only /stream.mjpg is served")
                return
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            last = -1
            try:
                while True:
                    if pulse:
                        index = PULSES[0]
                        if index == last:
                            time.sleep(0.001)
                            continue
                    else:
                        index = int((time.monotonic() - started) * fps)
                        if index == last:
                            time.sleep(max(0.0, started + (index + 1) / fps - time.monotonic()))
                            continue
                    last = index
                    shown = index if freeze_at is None else min(index, freeze_at)
                    ok, jpeg = cv2.imencode(".jpg", pattern.draw(shown % 65536, tag))
                    assert ok
                    data = jpeg.tobytes()
                    self.wfile.write(
                        f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                        f"Content-Length: {len(data)}\r\n\r\n".encode()
                    )
                    self.wfile.write(data)
                    self.wfile.write(b"\r\n")
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass

    return Handler


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--fps", type=float, default=20.0)
    parser.add_argument("--tag", type=int, default=0)
    parser.add_argument("--freeze-at", type=int, default=None)
    parser.add_argument("--pulse", action="store_true", help="one frame per SIGUSR1")
    args = parser.parse_args()
    if args.pulse:

        def on_pulse(signum: int, frame: object) -> None:
            PULSES[0] += 1

        signal.signal(signal.SIGUSR1, on_pulse)
    handler = make_handler(args.fps, args.tag, time.monotonic(), args.freeze_at, args.pulse)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    server.daemon_threads = True
    print(f"READY {server.server_address[1]}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
