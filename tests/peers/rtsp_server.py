"""A real RTSP server for camera tests: GStreamer's RTSP server on 127.0.0.1.

Run with the system interpreter (it needs Debian's ``python3-gi`` and
``gir1.2-gst-rtsp-server-1.0``, not the venv)::

    /usr/bin/python3 tests/peers/rtsp_server.py --port 0 --color 0xffff0000

It serves ``rtsp://127.0.0.1:<port>/test``: a ``videotestsrc`` "ball" pattern
(a white ball moving over a solid background, so consecutive frames differ)
encoded as H.264 (x264enc) or MJPEG, TCP and UDP. When it listens it prints one
line ``READY <port>`` to stdout and flushes; it runs until SIGTERM/SIGINT.

Apt packages: python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-base
(videotestsrc, videoconvert), gstreamer1.0-plugins-good (rtp, jpeg),
gstreamer1.0-plugins-ugly (x264enc).
"""

from __future__ import annotations

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def _launch_line(args: argparse.Namespace) -> str:
    src = (
        f"videotestsrc is-live=true pattern=ball background-color={args.color} "
        f"foreground-color=0xffffffff "
        f"! video/x-raw,width={args.width},height={args.height},framerate={args.fps}/1 "
        "! videoconvert "
    )
    if args.codec == "h264":
        # Key frame every 10 frames so a reconnecting client gets a picture quickly.
        enc = (
            f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={args.gop} "
            "! video/x-h264,profile=baseline ! rtph264pay name=pay0 pt=96 config-interval=1"
        )
    else:
        enc = "! jpegenc quality=85 ! rtpjpegpay name=pay0 pt=26"
    return f"( {src}{enc} )"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    parser.add_argument("--path", default="/test")
    parser.add_argument("--codec", choices=["h264", "mjpeg"], default="h264")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--gop", type=int, default=10, help="H.264 key frame interval, frames")
    parser.add_argument("--color", default="0xff0000ff", help="background ARGB, e.g. 0xffff0000")
    args = parser.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(_launch_line(args))
    # One pipeline for all clients: a reconnecting client joins the running stream.
    factory.set_shared(True)
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
        return 1

    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"READY {server.get_bound_port()}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
