"""Writing videos that play in browsers: H.264 in MP4 when it can be written, else a clear note.

OpenCV's pip wheels cannot encode H.264 (their bundled FFmpeg has no H.264 encoder; ``mp4v`` is
MPEG-4 Part 2, which browsers, chat tools and editors' previews do not play). PyAV (``av``, a
dependency in requirements.txt) ships FFmpeg with ``libx264``; :class:`VideoWriter` uses it when
it is importable and falls back to OpenCV ``mp4v`` otherwise, saying so once on stderr.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..errors import ImageError

#: what the fallback writes and why, printed once per writer
FALLBACK_NOTE = ("note: {path} is MPEG-4 Part 2 (mp4v): PyAV with libx264 is not installed, so it will "
                 "not play in web browsers; `pip install av` for H.264, or convert it: "
                 "ffmpeg -i {path} -c:v libx264 -pix_fmt yuv420p out.mp4")


def h264_available() -> bool:
    """Whether PyAV with an H.264 encoder (libx264) is importable."""
    try:
        import av
    except ImportError:
        return False
    return "libx264" in av.codecs_available


class VideoWriter:
    """Frames (H, W, 3 uint8 in ``order`` 'bgr' or 'rgb') -> an MP4 file at ``fps``.

    ``codec`` is ``h264`` (PyAV libx264, yuv420p: plays everywhere) or ``mp4v`` (OpenCV
    fallback); even sides are required by yuv420p, so odd frames are padded by one pixel.
    """

    def __init__(self, path: str | Path, fps: float, order: str = "bgr") -> None:
        self.path = Path(path)
        self.fps = max(1.0, float(fps))
        self.order = order
        self.codec = "h264" if h264_available() else "mp4v"
        self.frames = 0
        self._out = None

    def _open(self, h: int, w: int) -> None:
        if self.codec == "h264":
            import av
            from fractions import Fraction

            self._container = av.open(str(self.path), "w")
            stream = self._container.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1000))
            stream.width, stream.height = w + w % 2, h + h % 2
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "20", "preset": "veryfast"}
            self._out = stream
        else:
            import cv2

            self._out = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self._out.isOpened():
                raise ImageError(f"{self.path}: could not be opened for writing")
            print(FALLBACK_NOTE.format(path=self.path), file=sys.stderr)

    def write(self, frame: np.ndarray) -> None:
        h, w = frame.shape[:2]
        if self._out is None:
            self._open(h, w)
        if self.codec == "h264":
            import av

            if h % 2 or w % 2:
                frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            fmt = "bgr24" if self.order == "bgr" else "rgb24"
            packet_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format=fmt)
            for packet in self._out.encode(packet_frame):
                self._container.mux(packet)
        else:
            self._out.write(frame if self.order == "bgr" else frame[..., ::-1].copy())
        self.frames += 1

    def close(self) -> None:
        if self._out is None:
            return
        if self.codec == "h264":
            for packet in self._out.encode():
                self._container.mux(packet)
            self._container.close()
        else:
            self._out.release()
        self._out = None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
