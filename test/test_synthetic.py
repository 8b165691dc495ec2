"""The procedural street-scene generator: determinism, labels, motion, dataset writer."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from bisenet_ros.data.datasets import load_preset
from bisenet_ros.data.synthetic_scenes import (
    CAR, CLASSES, PERSON, SKY, StreetWorld, camera_matrix, drive_sequence, generate_scene, write_dataset,
)
from bisenet_ros.tools.synthetic import main


def test_same_seed_same_scene_other_seed_other_scene():
    a_img, a_lbl = generate_scene(5, (96, 128))
    b_img, b_lbl = generate_scene(5, (96, 128))
    c_img, c_lbl = generate_scene(6, (96, 128))
    assert np.array_equal(a_img, b_img) and np.array_equal(a_lbl, b_lbl)
    assert not np.array_equal(a_img, c_img)
    assert a_img.shape == (96, 128, 3) and a_img.dtype == np.uint8
    assert a_lbl.shape == (96, 128) and a_lbl.dtype == np.uint8


def test_labels_cover_every_class_and_match_the_preset():
    preset = load_preset("synthetic_street")
    assert preset.class_names == CLASSES
    seen = np.zeros(len(CLASSES), np.int64)
    for seed in range(6):
        _, lbl = generate_scene(seed, (120, 160))
        assert lbl.max() < len(CLASSES)
        seen += np.bincount(lbl.ravel(), minlength=len(CLASSES))
    assert (seen > 0).all(), dict(zip(CLASSES, seen.tolist()))
    # a street: road in the lower half, sky in the upper part
    _, lbl = generate_scene(0, (120, 160))
    assert (lbl[100:] == 0).mean() > 0.3 and (lbl[:30] == 3).mean() > 0.1


def test_image_content_follows_the_labels():
    """Each class has its own appearance: per-class mean colours differ clearly."""
    img, lbl = generate_scene(2, (240, 320))
    means = {c: img[lbl == c].reshape(-1, 3).mean(0) for c in np.unique(lbl) if (lbl == c).sum() > 200}
    road, sky = means[0], means[3]
    assert np.abs(road - sky).max() > 25


def test_drive_sequence_moves_smoothly():
    frames = list(drive_sequence(seed=3, num_frames=4, size=(96, 128), fps=10))
    assert [f.t for f in frames] == pytest.approx([0.0, 0.1, 0.2, 0.3])
    diffs = [np.mean(frames[i].labels != frames[i + 1].labels) for i in range(3)]
    assert all(0 < d < 0.25 for d in diffs), diffs  # things move, but only a little per frame
    again = next(drive_sequence(seed=3, num_frames=1, size=(96, 128)))
    assert np.array_equal(again.image, frames[0].image)


def test_people_are_drawn_in_a_sequence():
    frames = list(drive_sequence(seed=7, num_frames=3, size=(240, 320)))
    assert any((f.labels == PERSON).sum() > 20 for f in frames)


def test_write_dataset_and_cli(tmp_path, capsys):
    write_dataset(tmp_path / "a", count=2, seed=10, size=(64, 96))
    assert main(["--out", str(tmp_path / "b"), "--count", "2", "--seed", "10", "--size", "64x96"]) == 0
    assert "wrote 2 scenes" in capsys.readouterr().out
    for name in ("scene_000010.png", "scene_000011.png"):
        img_a = cv2.imread(str(tmp_path / "a" / "images" / name))
        img_b = cv2.imread(str(tmp_path / "b" / "images" / name))
        lbl = cv2.imread(str(tmp_path / "b" / "labels" / name), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(img_a, img_b)
        assert lbl.shape == (64, 96) and lbl.ndim == 2 and lbl.max() < len(CLASSES)
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "c"), "--size", "ten"])


def test_rendered_depth_is_the_geometry_drawn_at_each_pixel():
    """Back-projected with camera_matrix, ground pixels lie on the ground, facades on their plane,
    people on their plane, car pixels on their car; the sky has no depth; image and labels are
    those of render()."""
    world = StreetWorld(7)
    pose = dict(cam_z=30.0, cam_x=1.0, cam_h=1.6, yaw_deg=4.0, pitch_deg=-2.0, t=1.0)
    img, lbl, depth = world.render_with_depth((240, 320), **pose, rng=np.random.default_rng(0))
    img2, lbl2 = world.render((240, 320), **pose, rng=np.random.default_rng(0))
    assert np.array_equal(img, img2) and np.array_equal(lbl, lbl2)
    k = camera_matrix((240, 320))
    v, u = np.indices(lbl.shape)
    cam_pts = np.stack([(u - k[0, 2]) / k[0, 0], -(v - k[1, 2]) / k[1, 1], np.ones_like(u, float)], -1) * depth[..., None]
    yaw, pitch = np.radians(4.0), np.radians(-2.0)
    rot = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]]) @ np.array(
        [[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
    with np.errstate(invalid="ignore"):
        world_pts = cam_pts @ rot.T + np.array([1.0, 1.6, 30.0])
    assert np.isinf(depth[lbl == SKY]).all() and np.isfinite(depth[lbl != SKY]).all()
    ground = (lbl == 0) | (lbl == 1)
    np.testing.assert_allclose(world_pts[ground][:, 1], 0.0, atol=1e-6)
    building = lbl == 2
    np.testing.assert_allclose(np.abs(world_pts[building][:, 0]), world.facade_x, atol=1e-6)
    person = lbl == PERSON
    assert person.sum() > 20
    zs = {round(o.z + o.vz * 1.0, 6) for o in world.objects if o.kind == "person"}
    assert all(min(abs(z - p) for p in zs) < 1e-6 for z in world_pts[person][:, 2])
    car = lbl == CAR
    assert car.sum() > 200
    boxes = [(o.x, o.z + o.vz * 1.0, o.size) for o in world.objects if o.kind == "car"]

    def off_box(p):  # distance outside the nearest car's bounding box (metres)
        return min(np.linalg.norm(np.maximum(0, np.abs(p - [x, s[1] / 2, z]) - [s[0] / 2, s[1] / 2, s[2] / 2]))
                   for x, z, s in boxes)
    off = np.array([off_box(p) for p in world_pts[car]])
    footprint = depth[car] / k[0, 0]  # metres per pixel at that depth
    # on the box, except silhouette pixels of the polygon fill: within its edge (< 3 px footprints)
    assert np.median(off) < 1e-6 and (off < 3 * footprint).all(), np.percentile(off / footprint, [50, 99, 100])
