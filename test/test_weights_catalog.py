"""``bisenet-ros weights list|get`` against a local HTTP server (the real URLs are not reachable
here): the right file is cached with its sidecar and then works as ``--weights NAME``; a wrong
checksum, a truncated download, a file that is not the checkpoint and a server that is gone are
refused in one line, exit 2, with nothing left in the cache."""
from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from bisenet_ros.models import weights_catalog
from bisenet_ros.cli import main
from bisenet_ros.models import build_model
from bisenet_ros.options import PipelineOptions

NAME, FILE = "bisenetv2-cityscapes", "model_final_v2_city.pth"


def _checkpoint(path: Path, seed: int) -> bytes:
    torch.manual_seed(seed)
    torch.save(build_model("bisenetv2", 19, aux_heads=True).state_dict(), path)
    return path.read_bytes()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("served")
    good, other = _checkpoint(d / "good.pth", 0), _checkpoint(d / "other.pth", 1)
    return {"/good.pth": good, f"/mirror/{FILE}": good, "/other.pth": other, "/garbage.pth": b"not a checkpoint" * 100}


@pytest.fixture
def server(files):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            if self.path == "/truncated.pth":  # announces the whole file, sends half, hangs up
                body = files["/good.pth"]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()
    thread.join(10)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(weights_catalog.MIRROR_ENV, raising=False)
    return tmp_path / "xdg" / "bisenet_ros" / "weights"


def _one_line_error(capsys, needle: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and needle in err, err
    return err


def _nothing_cached(cache: Path) -> None:
    left = sorted(p.name for p in cache.iterdir()) if cache.is_dir() else []
    assert left == [], left


def test_get_caches_verified_file_with_sidecar_and_name_works_everywhere(server, files, cache, tmp_path, capsys,
                                                                       monkeypatch):
    assert main(["weights", "get", NAME, "--url", f"{server}/good.pth", "--no-progress"]) == 0
    assert str(cache / FILE) in capsys.readouterr().out
    assert (cache / FILE).read_bytes() == files["/good.pth"]
    side = yaml.safe_load((cache / "model_final_v2_city.yaml").read_text())
    assert side["arch"] == "bisenetv2" and side["num_classes"] == 19 and side["dataset"] == "cityscapes"
    assert side["sha256"] == hashlib.sha256(files["/good.pth"]).hexdigest()
    record = yaml.safe_load((cache / weights_catalog.RECORDS).read_text())[FILE]
    assert record["sha256"] == side["sha256"] and record["size"] == len(files["/good.pth"])
    assert sorted(p.name for p in cache.iterdir()) == sorted([FILE, "model_final_v2_city.yaml", "checksums.yaml"])
    # the name (and the upstream file name, when no such file is here) resolve to the cached file
    monkeypatch.chdir(tmp_path)
    assert PipelineOptions.of(weights=NAME).weights == str(cache / FILE)
    assert PipelineOptions.of(weights=FILE).weights == str(cache / FILE)
    from bisenet_ros.ros.parameters import validate_parameter

    assert validate_parameter("weights", NAME) is None  # the node's parameter
    assert main(["weights", "list"]) == 0
    listed = capsys.readouterr().out
    assert str(cache / FILE) in listed and "(recorded)" in listed
    img = tmp_path / "street.png"
    cv2.imwrite(str(img), np.full((64, 96, 3), 120, np.uint8))
    assert main(["segment", str(img), "--weights", NAME, "--input-size", "64x96", "--out", str(tmp_path / "o")]) == 0
    assert cv2.imread(str(tmp_path / "o" / "street_labels.png"), cv2.IMREAD_UNCHANGED).shape == (64, 96)
    # a later download of other bytes under the same name is refused: the first download's record holds
    capsys.readouterr()
    assert main(["weights", "get", NAME, "--url", f"{server}/other.pth", "--force", "--no-progress"]) == 2
    _one_line_error(capsys, "recorded at the first download")
    assert (cache / FILE).read_bytes() == files["/good.pth"]
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]


def test_mirror_environment_variable(server, files, cache, monkeypatch, capsys):
    monkeypatch.setenv(weights_catalog.MIRROR_ENV, f"{server}/mirror/")
    assert main(["weights", "get", NAME, "--no-progress"]) == 0
    assert (cache / FILE).read_bytes() == files[f"/mirror/{FILE}"]


def test_not_downloaded_name_says_how(cache, capsys, tmp_path):
    img = tmp_path / "i.png"
    cv2.imwrite(str(img), np.zeros((32, 32, 3), np.uint8))
    assert main(["segment", str(img), "--weights", NAME, "--out", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, f"run `bisenet-ros weights get {NAME}`")
    assert main(["weights", "get", "no-such-model"]) == 2
    _one_line_error(capsys, "unknown weights 'no-such-model'")


@pytest.mark.parametrize("path, extra, needle", [
    ("/good.pth", ["--sha256", "0" * 64], "sha256 mismatch"),
    ("/truncated.pth", [], "truncated"),
    ("/garbage.pth", [], "not a bisenetv2 checkpoint with 19 classes"),
    ("/missing.pth", [], "HTTP 404"),
])
def test_bad_downloads_are_refused_and_leave_nothing(server, cache, capsys, path, extra, needle):
    assert main(["weights", "get", NAME, "--url", f"{server}{path}", "--no-progress", *extra]) == 2
    _one_line_error(capsys, needle)
    _nothing_cached(cache)


def test_server_gone(cache, capsys):
    with socket.socket() as s:  # a port nobody listens on any more: the server is gone
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    assert main(["weights", "get", NAME, "--url", f"http://127.0.0.1:{dead}/good.pth", "--no-progress"]) == 2
    _one_line_error(capsys, "failed")
    _nothing_cached(cache)
