"""Every ``bisenet-ros`` subcommand (and the demo) against a table of hostile inputs.

Each case must end with exit status 2 and exactly one error line on stderr (argparse's errors too:
no usage block) -- never a traceback, never a success on garbage. The node's own table is in
test_node_reliability.py. Cases are run in-process through ``cli.main`` (an escaping exception
fails the test with its traceback); a few run through the console script to see the real stderr.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from bisenet_ros.data import bags
from bisenet_ros.cli import COMMANDS, main
from bisenet_ros.tools import demo

# -- fixtures: small real inputs --------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tiny_checkpoints, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hostile")
    rng = np.random.default_rng(0)
    f: dict[str, Path] = {"weights": tiny_checkpoints["bisenetv2"], "root": root}
    img = rng.integers(0, 256, (40, 64, 3), dtype=np.uint8)
    f["image"] = root / "good.png"
    cv2.imwrite(str(f["image"]), img)
    f["truncated"] = root / "trunc.png"
    f["truncated"].write_bytes(f["image"].read_bytes()[:60])
    f["huge_jpeg"] = root / "huge.jpg"
    f["huge_jpeg"].write_bytes(huge_jpeg())
    f["bag"] = root / "rec"
    labels = rng.integers(0, 5, (40, 64), dtype=np.uint8)
    bags.write_image_bag(f["bag"], [(img, labels)] * 3, fps=10, label_topic="/camera/labels",
                         start_ns=1_000_000_000)
    f["data"] = root / "data"
    for sub in ("images", "labels"):
        (f["data"] / sub).mkdir(parents=True)
    for i in range(2):
        cv2.imwrite(str(f["data"] / "images" / f"s{i}.png"), img[:, :, ::-1])
        cv2.imwrite(str(f["data"] / "labels" / f"s{i}.png"), labels)
    f["bad_data"] = root / "bad_data"
    shutil.copytree(f["data"], f["bad_data"])
    cv2.imwrite(str(f["bad_data"] / "labels" / "s1.png"), np.full((40, 64), 9, np.uint8))
    f["user_file"] = root / "notes.txt"
    f["user_file"].write_text("the user's own notes\n")
    f["nan_weights"] = _poisoned(tiny_checkpoints["bisenetv2"], root / "nan.pth", "nan")
    f["int_weights"] = _poisoned(tiny_checkpoints["bisenetv2"], root / "int.pth", "int")
    f["code_pickle"] = root / "code.pth"
    torch.save({"w": torch.zeros(1), "run": _RunsCode()}, f["code_pickle"])
    return f


class _RunsCode:
    """Unpickling this calls os.system (harmless here: ``true``): what weights_only refuses."""

    def __reduce__(self):
        import os

        return os.system, ("true",)


def huge_jpeg(side: int = 32768) -> bytes:
    """A valid 8x8 JPEG whose frame header claims ``side`` x ``side`` (about 630 bytes)."""
    ok, buf = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
    data = bytearray(buf.tobytes())
    i = data.find(b"\xff\xc0")
    data[i + 5:i + 7] = side.to_bytes(2, "big")
    data[i + 7:i + 9] = side.to_bytes(2, "big")
    return bytes(data)


def _poisoned(src: Path, dst: Path, how: str) -> Path:
    state = torch.load(src, weights_only=True)
    key = next(k for k in state if k.endswith("bias") and state[k].is_floating_point())
    if how == "nan":
        state[key] = state[key].clone()
        state[key][0] = float("nan")
    else:
        state = {k: (v.to(torch.int32) if v.is_floating_point() else v) for k, v in state.items()}
    torch.save(state, dst)
    return dst


#: hostile sidecars next to a good checkpoint: wrong types, non-UTF-8, deep nesting, bad values
SIDECARS = {
    "arch_int": b"arch: 5\n",
    "arch_unknown": b"arch: resnet\n",
    "classes_str": b"num_classes: many\n",
    "classes_zero": b"num_classes: 0\n",
    "classes_bool": b"num_classes: true\n",
    "size_list1": b"input_size: [1]\n",
    "size_str": b"input_size: huge\n",
    "dataset_int": b"dataset: 7\n",
    "dataset_bad_classes": b"dataset: {classes: 5}\n",
    "dataset_bad_color": b"dataset: {classes: [{name: a, color: [x, 1, 2]}]}\n",
    "dataset_nan_mean": b"dataset: {classes: [a, b, c, d, e], mean: [.nan, 0, 0]}\n",
    "dataset_inf_std": b"dataset: {classes: [a, b, c, d, e], std: [.inf, 1, 1]}\n",
    "dataset_bad_map": b"dataset: {classes: [a, b, c, d, e], label_maps: {m: {999999: 1}}}\n",
    "not_utf8": b"arch: \xff\xfe\n",
    "deep": b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n",
    "list": b"- 1\n- 2\n",
    "yaml_error": b"arch: [unclosed\n",
}


@pytest.fixture(scope="module")
def sidecar_weights(files) -> dict[str, Path]:
    out = {}
    for name, content in SIDECARS.items():
        d = files["root"] / "sidecars" / name
        d.mkdir(parents=True)
        shutil.copy(files["weights"], d / "m.pth")
        (d / "m.yaml").write_bytes(content)
        out[name] = d / "m.pth"
    return out


# -- the table ----------------------------------------------------------------------------------------


def cases(f: dict[str, Path]) -> list[tuple[str, list[str], str]]:
    """(name, argv, fragment of the error line)."""
    w, root = str(f["weights"]), f["root"]
    bag, img, out = str(f["bag"]), str(f["image"]), str(root / "o")
    model = ["--weights", w, "--device", "cpu", "--backend", "torch"]
    train = ["train", "--model", "bisenetv2", "--data", str(f["data"]), "--num-classes", "5", "--iters", "2",
             "--batch-size", "2", "--crop", "32x32", "--device", "cpu", "--workers", "0", "--no-progress"]
    return [
        # segment
        ("segment missing file", ["segment", str(root / "none.png"), "--out-dir", out, *model], "not found"),
        ("segment truncated png", ["segment", str(f["truncated"]), "--out-dir", out, *model], "cannot be decoded"),
        ("segment 32768^2 jpeg", ["segment", str(f["huge_jpeg"]), "--out-dir", out, *model], "out of range"),
        ("segment out-dir is a file", ["segment", img, "--out-dir", str(f["user_file"]), *model], "is a file"),
        ("segment alpha nan", ["segment", img, "--out-dir", out, "--alpha", "nan", *model], "finite"),
        ("segment nan weights", ["segment", img, "--out-dir", out, "--weights", str(f["nan_weights"])],
         "non-finite"),
        ("segment int weights", ["segment", img, "--out-dir", out, "--weights", str(f["int_weights"])],
         "floating point"),
        ("segment mean nan", ["segment", img, "--out-dir", out, "--mean", "nan,0,0", *model], "finite"),
        ("segment std inf", ["segment", img, "--out-dir", out, "--std", "inf,1,1", *model], "finite"),
        ("segment num-classes 0", ["segment", img, "--out-dir", out, "--num-classes", "0", *model], "out of range"),
        ("segment max-pixels 0", ["segment", img, "--out-dir", out, "--max-pixels", "0", *model], "out of range"),
        ("segment weights is a directory", ["segment", img, "--out-dir", out, "--weights", str(f["data"])],
         "weights file is a directory"),  # issue 23 row 15
        ("segment code-carrying pickle", ["segment", img, "--out-dir", out, "--weights", str(f["code_pickle"])],
         "refused: the checkpoint holds Python objects (posix.system)"),  # issue 23 row 16: our own sentence
        ("segment image over budget", ["segment", img, "--out-dir", out, "--max-pixels", "100", *model],
         "exceeds the budget"),
        # eval-bag
        ("eval-bag pred-bag is the input", ["eval-bag", bag, "--pred-bag", bag, "--overwrite", "--no-progress",
                                            *model], "is the input"),
        ("eval-bag pred-bag holds the input", ["eval-bag", str(next(f["bag"].glob("*.mcap"))), "--pred-bag", bag,
                                               "--overwrite", "--no-progress", *model], "contains the input"),
        ("eval-bag out inside the bag", ["eval-bag", bag, "--out", str(f["bag"] / "report"), "--no-progress",
                                         *model], "lies inside"),
        ("eval-bag out is a file", ["eval-bag", bag, "--out", str(f["user_file"]), "--no-progress", *model],
         "is a file"),
        ("eval-bag tolerance nan", ["eval-bag", bag, "--stamp-tolerance", "nan", *model], "finite"),
        ("eval-bag negative warmup", ["eval-bag", bag, "--warmup", "-1", *model], "--warmup: -1 is out of range"),
        ("eval-bag missing bag", ["eval-bag", str(root / "nobag"), *model], "does not exist"),
        ("eval-bag label = image topic", ["eval-bag", bag, "--label-topic", "/camera/image_raw", *model],
         "must differ"),
        ("eval-bag pred-bag over a user dir", ["eval-bag", bag, "--pred-bag", str(f["data"]), "--overwrite",
                                               "--no-progress", *model], "not a ROS 2 bag written by"),
        # replay (refused before any node starts)
        ("replay rate 0", ["replay", bag, "--rate", "0"], "out of range"),
        ("replay weights not a checkpoint", ["replay", bag, "--weights", str(f["user_file"])],  # the node's
         f"exited with code 2: {f['user_file']}: not a PyTorch checkpoint"),  # ERROR line, not its log's tail
        ("replay out inside the bag", ["replay", bag, "--out", str(f["bag"] / "r"), *model], "lies inside"),
        ("replay overlays over user dir", ["replay", bag, "--save-overlays", str(f["data"]), *model],
         "non-empty directory"),
        ("replay label-map without topic", ["replay", bag, "--label-map", "labelIds"], "needs --label-topic"),
        # make-bag
        ("make-bag video is a folder", ["make-bag", "--video", str(f["data"] / "images"), "--out", str(root / "mb")],
         "images: is a directory"),
        ("make-bag fps 1e-9", ["make-bag", "--images", str(f["data"] / "images"), "--out", str(root / "mb"),
                               "--fps", "1e-9"], "out of range"),
        ("make-bag fps inf", ["make-bag", "--images", str(f["data"] / "images"), "--out", str(root / "mb"),
                              "--fps", "inf"], "finite"),
        ("make-bag label topic = topic", ["make-bag", "--images", str(f["data"] / "images"), "--labels",
                                          str(f["data"] / "labels"), "--out", str(root / "mb"),
                                          "--label-topic", "/camera/image_raw"], "must differ"),
        ("make-bag bad topic", ["make-bag", "--images", str(f["data"] / "images"), "--out", str(root / "mb"),
                                "--topic", "bad topic!!"], "not a valid ROS 2 topic"),
        ("make-bag empty topic", ["make-bag", "--images", str(f["data"] / "images"), "--out", str(root / "mb"),
                                  "--topic", ""], "not a valid ROS 2 topic"),
        ("make-bag out is the input", ["make-bag", "--images", str(f["data"] / "images"), "--out",
                                       str(f["data"] / "images"), "--overwrite"], "is the input"),
        ("make-bag out over a user dir", ["make-bag", "--images", str(f["data"] / "images"), "--out",
                                          str(f["bad_data"]), "--overwrite"], "not a ROS 2 bag written by"),
        ("make-bag out over a user bag", ["make-bag", "--images", str(f["data"] / "images"), "--out",
                                          str(root / "user_bag"), "--overwrite"], "not a ROS 2 bag written by"),
        # train
        ("train --init not a checkpoint", ["train", "--data", str(f["data"]), "--init", str(f["user_file"]), "--iters",
                                           "2", "--batch-size", "2", "--crop", "32x32", "--out", str(root / "i.pth")],
         "notes.txt: not a PyTorch checkpoint"),
        ("train out is a directory", [*train, "--out", str(f["data"])], "must end in .pth"),
        ("train out is a .pth directory", [*train, "--out", str(_dir(root / "d.pth"))], "is a directory"),
        ("train out unwritable", [*train, "--out", "/proc/m.pth"], "not writable"),
        ("train out .yaml", [*train, "--out", str(root / "o1" / "model.yaml")], "must end in .pth"),
        ("train out .txt", [*train, "--out", str(f["user_file"])], "must end in .pth"),
        ("train sidecar over user yaml", [*train, "--out", str(_user_yaml(root / "X.pth"))], "exists already"),
        ("train overwrite user yaml", [*train, "--out", str(_user_yaml(root / "Y.pth")), "--overwrite"],
         "not a checkpoint sidecar"),
        ("train curve over user csv", [*train, "--out", str(_user_curve(root / "Z.pth"))], "exists already"),
        ("train threads -1", [*train, "--out", str(root / "t.pth"), "--threads", "-1"], "out of range"),
        ("train bad label value", [*train[:4], str(f["bad_data"]), *train[5:], "--out", str(root / "t.pth")],
         "label values [9]"),
        # bench, export-onnx, node-bench
        ("bench json over user file", ["bench", "--json", str(f["user_file"]), "--frames", "1", *model],
         "exists already"),
        ("bench json is a dir", ["bench", "--json", str(f["data"]), "--frames", "1", *model], "is a directory"),
        ("bench nan weights", ["bench", "--frames", "1", "--weights", str(f["nan_weights"])], "non-finite"),
        ("bench frames 0", ["bench", "--frames", "0", *model], "out of range"),
        ("export nan weights", ["export-onnx", "--weights", str(f["nan_weights"]), "--out", str(root / "x.onnx"),
                                "--input-size", "64x64"], "non-finite"),
        ("export over user file", ["export-onnx", "--weights", w, "--out", str(_user_onnx(root)), "--overwrite",
                                   "--input-size", "64x64"], "not a ONNX model"),
        ("node-bench json over user file", ["node-bench", "--json", str(f["user_file"]), *model], "exists already"),
        ("node-bench rate 0", ["node-bench", "--rate", "0", *model], "out of range"),
        # camera (refused before any node starts)
        ("camera missing source", ["camera", str(root / "none.mp4")], "no such file, folder or device"),
        ("camera fps 0", ["camera", img, "--fps", "0"], "out of range"),
        ("camera bad topic", ["camera", img, "--topic", "bad topic!!"], "not a valid ROS 2 topic"),
        ("camera info not a mapping", ["camera", img, "--camera-info", str(f["user_file"])],
         "expected a YAML mapping"),
        ("camera image over budget", ["camera", img, "--max-pixels", "100"], "exceeds the budget"),
        # weights (refused before any download)
        ("weights unknown name", ["weights", "get", "no-such-model"], "unknown weights"),
        ("weights get without name", ["weights", "get"], "needs a NAME"),
        ("weights sha256 not hex", ["weights", "get", "bisenetv2-cityscapes", "--sha256", "zz"],
         "64 hex digits"),
        # health-baseline
        ("health-baseline missing folder", ["health-baseline", "--images", str(root / "nodir"), *model],
         "no such directory"),
        ("health-baseline every 0", ["health-baseline", "--images", str(f["data"] / "images"), "--every", "0",
                                     *model], "out of range"),
        ("health-baseline out over user file", ["health-baseline", "--images", str(f["data"] / "images"),
                                                "--out", str(_user_yaml(root / "H.pth").with_suffix(".yaml")),
                                                *model], "exists already"),
        ("health-baseline nan weights", ["health-baseline", "--images", str(f["data"] / "images"), "--weights",
                                         str(f["nan_weights"]), "--out", str(root / "h.health.yaml")],
         "non-finite"),
        # quantize (outputs.check_output: its model + sidecar, replaced only with --overwrite)
        ("quantize out over user file", ["quantize", "--weights", w, "--calibration", str(f["data"] / "images"),
                                         "--out", str(_user_onnx(root)), "--overwrite"], "not a int8 ONNX model written by"),
        ("quantize out is the input", ["quantize", "--weights", w, "--calibration", str(f["data"]),
                                       "--out", str(f["data"] / "q.onnx")], "lies inside the input"),
        ("quantize max-frames 1", ["quantize", "--weights", w, "--calibration", str(f["data"]),
                                   "--out", str(root / "q.onnx"), "--max-frames", "1"], "--max-frames must be"),
        ("quantize nan weights", ["quantize", "--weights", str(f["nan_weights"]), "--calibration", str(f["data"]),
                                  "--out", str(root / "q.onnx")], "non-finite"),
    ]


def _dir(path: Path) -> Path:
    path.mkdir(exist_ok=True)
    return path


def _user_yaml(pth: Path) -> Path:
    pth.with_suffix(".yaml").write_text("my: own notes\n")
    return pth


def _user_curve(pth: Path) -> Path:
    pth.with_name(pth.stem + ".train.csv").write_text("my,own,table\n")
    return pth


def _user_onnx(root: Path) -> Path:
    path = root / "mine.onnx"
    path.write_text("not an onnx model")
    return path


def _run(argv: list[str], capsys) -> tuple[int, list[str]]:
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse: one error line, exit 2
        rc = exc.code
    err = capsys.readouterr().err
    assert "Traceback" not in err and "usage:" not in err, err
    lines = [ln for ln in err.strip().splitlines() if ": error:" in ln]  # progress/info lines aside
    if lines and not err.strip().endswith(lines[-1]):
        lines.append("(the error is not the last line)")
    return rc, lines


def test_every_subcommand_is_in_the_table(files):
    covered = {argv[0] for _, argv, _ in cases(files)}
    missing = set(COMMANDS) - covered
    assert not missing, f"subcommands without hostile cases: {missing}"


def test_hostile_inputs_give_one_line_and_exit_2(files, capsys):
    _user_bag(files["root"] / "user_bag")
    bag_before = sorted((p.name, p.stat().st_size) for p in files["bag"].iterdir())
    failures = []
    for name, argv, fragment in cases(files):
        rc, lines = _run(argv, capsys)
        if rc != 2 or len(lines) != 1 or fragment not in lines[0] or "error" not in lines[0]:
            failures.append(f"{name}: rc {rc}, stderr {lines}")
    assert not failures, "\n".join(failures)
    # nothing of the inputs was touched
    assert sorted((p.name, p.stat().st_size) for p in files["bag"].iterdir()) == bag_before
    assert files["user_file"].read_text() == "the user's own notes\n"
    assert (files["root"] / "user_bag" / "metadata.yaml").is_file()


def _user_bag(path: Path) -> None:
    """A bag recorded by someone else (no bisenet-ros mark in its metadata)."""
    from rosbags.rosbag2 import Writer

    if path.exists():
        return
    with Writer(path, version=8) as w:
        w.add_connection("/x", "std_msgs/msg/String", typestore=bags.typestore())


def test_hostile_sidecars_give_one_line(sidecar_weights, files, capsys):
    failures = []
    for name, weights in sidecar_weights.items():
        rc, lines = _run(["segment", str(files["image"]), "--out-dir", str(files["root"] / "so"),
                          "--weights", str(weights), "--device", "cpu", "--backend", "torch"], capsys)
        if rc != 2 or len(lines) != 1 or "error" not in lines[0]:
            failures.append(f"{name}: rc {rc}, stderr {lines}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("argv, fragment", [
    (["--frames", "1"], "--frames must be >= 2"),
    (["--fps", "nan"], "finite"),
])
def test_demo_hostile_options(argv, fragment, files, capsys):
    try:
        rc = demo.main([*argv, "--out", str(files["root"] / "demo")])
    except SystemExit as exc:
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and fragment in err.strip().splitlines()[-1]


def test_demo_refuses_a_user_folder(files, capsys):
    assert demo.main(["--out", str(files["data"])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "non-empty directory bisenet-ros did not create" in err[0]


def test_console_script_prints_one_line(files):
    """The installed entry point: no traceback, one line, exit 2 (the eval-bag data-loss case)."""
    exe = Path(sys.executable).with_name("bisenet-ros")
    proc = subprocess.run([str(exe), "eval-bag", str(files["bag"]), "--pred-bag", str(files["bag"]),
                           "--overwrite", "--weights", str(files["weights"])], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"bisenet-ros eval-bag: error: --pred-bag {files['bag']} is the input {files['bag']}; "
        "choose another output path"]
    assert bags.list_topics(files["bag"])["/camera/image_raw"].count == 3  # the recording is intact


def test_non_finite_verification_error_is_refused():
    """`nan >= tol` is False: a NaN relative error must never pass as verified (export, auto, bench)."""
    from bisenet_ros.inference.export import ExportError, relative_error

    ref = torch.ones(1, 3, 4, 4)
    out = ref.clone()
    out[0, 0, 0, 0] = float("nan")
    with pytest.raises(ExportError, match="the output holds NaN/inf"):
        relative_error(out, ref)
    with pytest.raises(ExportError, match="the reference holds NaN/inf"):
        relative_error(ref, out)
    assert relative_error(ref, ref) == 0.0


def test_constant_model_output_gets_a_warning(files, tmp_path, capsys):
    state = torch.load(files["weights"], weights_only=True)
    zeroed = {k: (torch.zeros_like(v) if v.is_floating_point() and not k.endswith("running_var") else v)
              for k, v in state.items()}
    torch.save(zeroed, tmp_path / "zero.pth")
    rc = main(["segment", str(files["image"]), "--out", str(tmp_path / "o"), "--weights", str(tmp_path / "zero.pth"),
               "--device", "cpu", "--backend", "torch"])
    err = capsys.readouterr().err
    assert rc == 0 and "warning: the model predicts class 0 for every pixel of a random calibration input" in err
    rc = main(["segment", str(files["image"]), "--out", str(tmp_path / "o2"), "--weights", str(files["weights"]),
               "--device", "cpu", "--backend", "torch"])
    assert rc == 0 and "warning:" not in capsys.readouterr().err


def test_png_header_over_the_budget_is_refused_unread():
    """A PNG claiming 16384x16384 (the 783 KB case): refused from its IHDR, before decoding."""
    from bisenet_ros.errors import ImageError
    from bisenet_ros.data.images import compressed_size, decode_image_bytes

    ok, buf = cv2.imencode(".png", np.zeros((8, 8), np.uint8))
    data = bytearray(buf.tobytes())
    data[16:20] = (16384).to_bytes(4, "big")
    data[20:24] = (16384).to_bytes(4, "big")
    assert compressed_size(bytes(data)) == (16384, 16384)
    with pytest.raises(ImageError, match="exceeds the budget"):
        decode_image_bytes(bytes(data), "png")


# -- issue 23 (reliability, pass three): depth, intrinsics, loss blame -------------------------------
# The node's side of these rows (refused per frame with a WARN, labels keep flowing) is in
# test_node_points.py; here the ROS-free core that decides.
K23 = [300.0, 0.0, 159.5, 0.0, 300.0, 119.5, 0.0, 0.0, 1.0]  # a 320x240 camera


def _k(**changes: float) -> list[float]:
    k = list(K23)
    for name, value in changes.items():
        k[{"fx": 0, "cx": 2, "fy": 4, "cy": 5}[name]] = value
    return k


@pytest.mark.parametrize("changes, fragment", [
    ({"cx": float("nan")}, "cx = nan (must be finite)"),
    ({"cy": float("inf")}, "cy = inf (must be finite)"),
    ({"fx": float("inf")}, "fx = inf (must be finite)"),
    ({"fx": 1e-300}, "fx = 1e-300, implausible for a 320x240 image"),
    ({"fy": 1e12}, "fy = 1e+12, implausible"),
    ({"cx": 1e38}, "cx = 1e+38, far outside the 320x240 image"),
    ({"cy": -500.0}, "cy = -500, far outside"),
])
def test_row3_implausible_intrinsics_are_refused_before_back_projection(changes, fragment):
    """Row 3: CameraInfo K with NaN/inf/absurd values made clouds of non-finite points (is_dense
    true) or points 1e35 m away; refused with a line naming the value, before any point is made."""
    from bisenet_ros.errors import ImageError
    from bisenet_ros.data.pointcloud import depth_intrinsics

    with pytest.raises(ImageError, match=__import__("re").escape(fragment)):
        depth_intrinsics(_k(**changes), (240, 320), (240, 320), (240, 320))
    assert depth_intrinsics(K23, (240, 320), (240, 320), (240, 320)) == (300.0, 300.0, 159.5, 119.5)


def test_row3_a_cloud_never_holds_a_non_finite_point():
    """Row 3: valid intrinsics, but float32 depth near its maximum: x = ray * z overflows to inf.
    The cloud says is_dense, so such a pixel is no point."""
    from bisenet_ros.data.pointcloud import CloudOptions, PointCloudBuilder, depth_intrinsics, depth_to_metres

    depth = np.full((240, 320), 2.0, np.float32)
    depth[0, 0] = depth[239, 319] = 3e38
    palette = np.array([[0, 0, 0], [255, 0, 0]], np.uint8)
    with np.errstate(all="raise"):  # no warning either
        cloud = PointCloudBuilder().build(depth_to_metres(depth, "32FC1"), depth_intrinsics(  # wide: rays > 1
            _k(fx=100.0, fy=100.0), (240, 320), (240, 320), (240, 320)), np.zeros((240, 320), np.uint8), palette,
            CloudOptions())
    xyz = np.stack([cloud["x"], cloud["y"], cloud["z"]])
    assert np.isfinite(xyz).all() and len(cloud) == 240 * 320 - 2


@pytest.mark.parametrize("depth_size, fragment", [
    ((1, 1), "depth size 1x1 is less than 1/8 of the camera's 320x240"),
    ((2, 3), "depth size 3x2 is less than 1/8 of the camera's 320x240"),
])
def test_row11_depth_far_smaller_than_the_camera_is_refused(depth_size, fragment):
    """Row 11: a 1x1 or 3x2 'depth' passed the clean-scale check (1 px rounding) and gave 1 or 6
    points; depth smaller than 1/MAX_DEPTH_DOWNSCALE of the camera per side is refused."""
    from bisenet_ros.errors import ImageError
    from bisenet_ros.data.pointcloud import MAX_DEPTH_DOWNSCALE, depth_intrinsics

    with pytest.raises(ImageError, match=fragment):
        depth_intrinsics(K23, (240, 320), depth_size, (240, 320))
    smallest = (240 // MAX_DEPTH_DOWNSCALE, 320 // MAX_DEPTH_DOWNSCALE)
    assert depth_intrinsics(K23, (240, 320), smallest, (240, 320))[0] == pytest.approx(300.0 / MAX_DEPTH_DOWNSCALE)


def test_row12_depth_with_a_trailing_payload_or_a_huge_step_is_refused():
    """Row 12: a depth message carrying 60 MB beyond its pixels was accepted and buffered (5 per
    camera); its data may hold at most one row beyond height*step, its step at most twice the row
    plus MAX_ROW_PADDING (here 6 MB of trailing bytes on a 4x4 image)."""
    from types import SimpleNamespace

    from bisenet_ros.errors import ImageError
    from bisenet_ros.data.images import MAX_ROW_PADDING, raw_depth_to_array

    pixels = np.ones((4, 4), np.uint16).tobytes()
    msg = SimpleNamespace(height=4, width=4, step=8, encoding="16UC1", is_bigendian=0,
                          data=pixels + bytes(6_000_000))
    with pytest.raises(ImageError, match="6000000 more than height\\*step = 4\\*8 = 32"):
        raw_depth_to_array(msg)
    huge_step = 8 * 2 + MAX_ROW_PADDING + 1
    msg = SimpleNamespace(height=4, width=4, step=huge_step, encoding="16UC1", is_bigendian=0,
                          data=bytes(4 * huge_step))
    with pytest.raises(ImageError, match=f"step {huge_step} is more than twice the row of 8 bytes"):
        raw_depth_to_array(msg)
    msg.data, msg.step = pixels + bytes(8), 8  # a few bytes (at most a row) beyond: tolerated
    assert raw_depth_to_array(msg)[0].shape == (4, 4)


def test_row19_the_loss_warning_names_the_node_when_its_callback_thread_is_busy():
    """Row 19: 1x1 images at 45k msg/s kept one core busy and /diagnostics blamed the network
    ("53% lost in transport"). With the callback thread busy (CallbackLoad), the node is named."""
    from bisenet_ros.ros.loss import NODE_BUSY, CallbackLoad, LossMonitor, loss_message

    m = LossMonitor()
    for i in range(100):  # stamps of a fast camera; later every other image never reached the callback
        if i < 40 or i % 2 == 0:
            m.on_image(1_000_000_000 + i * 1_000_000)
    report = m.evaluate(now=10.0)
    assert report.warn
    load = CallbackLoad()
    assert load.sample(100.0, 5.0) is None  # one sample is no interval
    busy = load.sample(102.0, 6.94)  # 1.94 s of CPU in 2 s of wall time
    assert busy == pytest.approx(0.97) and busy >= NODE_BUSY
    text = loss_message("image", report, "reliable", ["reliable"], callback_busy=busy)
    assert "the node itself, not the network, is the bottleneck" in text and "97% busy" in text
    assert "lost in transport" not in text and "\n" not in text
    idle = loss_message("image", report, "reliable", ["reliable"], callback_busy=0.01)
    assert "lost in transport" in idle and "the network or the camera host" in idle
