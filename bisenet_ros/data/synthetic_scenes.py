"""Procedural street scenes with pixel-exact ground truth (ROS-free, deterministic by seed).

A :class:`StreetWorld` is a straight street in 3D (X right, Y up, Z forward, metres): a road with
lane markings, sidewalks with curbs, building facades with windows on both sides (gaps show
parks), trees, parked and moving cars, pedestrians, and a sky with clouds. :meth:`render` ray-casts
the ground and facade planes per pixel for a pinhole camera at any position/heading, draws the
objects far-to-near, then applies lighting, shadows, colour cast, blur and sensor noise.
Each render returns an RGB ``uint8`` image and a ``uint8`` label image with the class ids of
:data:`CLASSES` (the ``synthetic_street`` preset); :meth:`StreetWorld.render_with_depth` also
returns the exact depth (metres along the optical axis, ``inf`` for sky) of the surface drawn at
every pixel centre, for the pinhole :func:`camera_matrix`.

>>> img, lbl = generate_scene(seed=3, size=(240, 320))
>>> frames = list(drive_sequence(seed=7, num_frames=80, size=(240, 320), fps=10))

``python -m bisenet_ros.tools.synthetic --out DIR --count N --seed S --size 240x320`` writes a folder
dataset (``images/*.png`` + ``labels/*.png``) that ``bisenet-ros train`` reads.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from .street_objects import (  # noqa: F401 (CLASSES and the class ids re-exported)
    BUILDING, CAR, CLASSES, PERSON, ROAD, SIDEWALK, SKY, VEGETATION, Facade, Rays, StreetObject, draw_car,
    draw_person, draw_tree, sample_texture, value_noise,
)

PRESET_NAME = "synthetic_street"
#: objects farther than this (metres) are not drawn (a person at 45 m is ~9 px tall at 320x240)
MAX_DISTANCE: dict[str, float] = {"car": 90.0, "tree": 90.0, "person": 45.0}


def camera_matrix(size: tuple[int, int], fov_deg: float = 70.0) -> np.ndarray:
    """The renderer's pinhole K (3x3, row-major as in CameraInfo) for an image ``size`` (H, W)
    and horizontal field of view: square pixels, principal point at the image centre."""
    h, w = int(size[0]), int(size[1])
    f = 0.5 * w / math.tan(math.radians(fov_deg) / 2)
    return np.array([[f, 0.0, (w - 1) / 2], [0.0, f, (h - 1) / 2], [0.0, 0.0, 1.0]])


class StreetWorld:
    """One random street; render it from any camera pose. All randomness comes from ``seed``."""

    def __init__(self, seed: int, length: float = 420.0) -> None:
        rng = np.random.default_rng(seed)
        self.seed = seed
        self.road_half = float(rng.uniform(3.5, 7.0))
        self.sidewalk_w = float(rng.uniform(2.0, 4.5))
        self.facade_x = self.road_half + self.sidewalk_w
        self.lanes = int(rng.integers(1, 3))  # per direction
        # appearance
        self.asphalt = np.array([0.32, 0.32, 0.34]) * rng.uniform(0.7, 1.25) + rng.uniform(-0.03, 0.03, 3)
        pav = [np.array([0.62, 0.60, 0.56]), np.array([0.60, 0.45, 0.40]), np.array([0.55, 0.56, 0.58])]
        self.pavement = pav[int(rng.integers(len(pav)))] * rng.uniform(0.8, 1.15)
        self.tile = float(rng.uniform(0.4, 0.9))
        self.grass = np.array([0.28, 0.45, 0.18]) * rng.uniform(0.7, 1.2)
        self.sky_mode = int(rng.integers(3))  # 0 blue, 1 overcast, 2 evening
        self.sun_gain = float(rng.uniform(0.65, 1.25))
        self.tint = 1.0 + rng.uniform(-0.08, 0.08, 3)
        self.shadow_side = float(rng.choice([-1.0, 1.0]))
        self.shadow_x = float(rng.uniform(-self.road_half, self.facade_x)) * self.shadow_side
        self.shadow_strength = float(rng.uniform(0.45, 0.85))
        self.noise_sigma = float(rng.uniform(1.5, 7.0))
        self.tex = [value_noise(rng, 256, c) for c in (8, 24, 64)]
        self.cloud = value_noise(rng, 256, 6, 4)
        self.facades = {side: self._facades(rng, length, side) for side in (-1, 1)}
        self.objects = self._objects(rng, length)

    # -- world layout -----------------------------------------------------------------------
    def _facades(self, rng: np.random.Generator, length: float, side: int) -> list[Facade]:
        out, z = [], -30.0
        while z < length:
            w = float(rng.uniform(8, 30))
            gap = rng.random() < 0.15
            base = rng.uniform(0.25, 0.85, 3) * np.array([1.0, 0.95, 0.9])
            grey = rng.random() < 0.4
            if grey:
                base = np.full(3, rng.uniform(0.3, 0.8))
            win = np.array([0.15, 0.2, 0.28]) * rng.uniform(0.6, 1.8)
            out.append(Facade(z, z + w, 0.0 if gap else float(rng.uniform(6, 32)), base, win,
                               float(rng.uniform(2.8, 3.8)), float(rng.uniform(2.0, 4.0))))
            z += w
        return out

    def _objects(self, rng: np.random.Generator, length: float) -> list[StreetObject]:
        objs: list[StreetObject] = []
        car_colors = [(0.8, 0.1, 0.1), (0.1, 0.2, 0.6), (0.9, 0.9, 0.9), (0.1, 0.1, 0.1),
                      (0.55, 0.55, 0.58), (0.2, 0.45, 0.25), (0.85, 0.75, 0.2), (0.35, 0.2, 0.15)]
        lane_w = self.road_half / self.lanes
        z = float(rng.uniform(3, 12))
        while z < length:  # cars driving in lanes (right side same direction, left oncoming)
            lane = int(rng.integers(self.lanes))
            side = float(rng.choice([-1.0, 1.0]))
            x = side * (lane + 0.5) * lane_w
            vz = float(rng.uniform(4, 11)) * (1 if side > 0 else -1)
            objs.append(self._car(rng, x, z, vz, car_colors))
            z += float(rng.uniform(6, 30))
        for side in (-1.0, 1.0):  # parked cars along the curbs
            z = float(rng.uniform(2, 15))
            while z < length:
                if rng.random() < 0.6:
                    objs.append(self._car(rng, side * (self.road_half - 1.1), z, 0.0, car_colors))
                z += float(rng.uniform(5.5, 14))
            z = float(rng.uniform(0, 10))
            while z < length:  # trees on the sidewalk
                r = float(rng.uniform(1.2, 2.8))
                objs.append(StreetObject("tree", side * (self.road_half + self.sidewalk_w * rng.uniform(0.45, 0.7)),
                                    z, 0.0, (r, float(rng.uniform(2.2, 4.0)), 0.0),
                                    np.array([0.2, 0.4, 0.12]) * rng.uniform(0.6, 1.4),
                                    np.array([0.3, 0.22, 0.15]) * rng.uniform(0.7, 1.3)))
                z += float(rng.uniform(8, 25))
            z = float(rng.uniform(0, 6))
            while z < length:  # pedestrians
                x = side * (self.road_half + rng.uniform(0.4, self.sidewalk_w - 0.3))
                if rng.random() < 0.12:  # someone crossing
                    x = float(rng.uniform(-self.road_half, self.road_half))
                objs.append(StreetObject("person", x, z, float(rng.uniform(-1.5, 1.5)),
                                    (float(rng.uniform(0.45, 0.6)), float(rng.uniform(1.55, 1.95)), 0.3),
                                    rng.uniform(0.05, 0.9, 3), rng.uniform(0.05, 0.6, 3)))
                z += float(rng.uniform(2, 12))
        return objs

    @staticmethod
    def _car(rng: np.random.Generator, x: float, z: float, vz: float, colors) -> StreetObject:
        col = np.array(colors[int(rng.integers(len(colors)))]) * rng.uniform(0.8, 1.1)
        size = (float(rng.uniform(1.7, 2.0)), float(rng.uniform(1.35, 1.75)), float(rng.uniform(3.8, 4.8)))
        return StreetObject("car", x, z, vz, size, np.clip(col, 0, 1), np.array([0.08, 0.1, 0.13]))

    # -- rendering ----------------------------------------------------------------------------
    def render(self, size: tuple[int, int] = (240, 320), **pose) -> tuple[np.ndarray, np.ndarray]:
        """RGB uint8 image and uint8 class-id labels of the street seen from the given pose
        (``cam_z``, ``cam_x``, ``cam_h``, ``yaw_deg``, ``pitch_deg``, ``t``, ``fov_deg``, ``rng``: see
        :meth:`render_with_depth`)."""
        img, lbl, _ = self.render_with_depth(size, **pose)
        return img, lbl

    def render_with_depth(
        self,
        size: tuple[int, int] = (240, 320),
        cam_z: float = 0.0,
        cam_x: float = 0.0,
        cam_h: float = 1.5,
        yaw_deg: float = 0.0,
        pitch_deg: float = 0.0,
        t: float = 0.0,
        fov_deg: float = 70.0,
        rng: np.random.Generator | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """RGB uint8 image, uint8 class-id labels and the depth (float64 metres along the optical
        axis, ``inf`` = sky) of the surface drawn at each pixel centre (K: :func:`camera_matrix`).

        ``t`` (seconds) moves cars and pedestrians; ``rng`` draws the sensor noise (default: a
        generator seeded from the world seed and the pose, so renders are reproducible).
        """
        h, w = int(size[0]), int(size[1])
        if rng is None:
            rng = np.random.default_rng([self.seed, int(cam_z * 1000) & 0xFFFFFFF, int(t * 1000) & 0xFFFFFFF])
        k = camera_matrix((h, w), fov_deg)
        f, cx, cy = k[0, 0], k[0, 2], k[1, 2]
        cyaw, syaw = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
        cp, sp = math.cos(math.radians(pitch_deg)), math.sin(math.radians(pitch_deg))
        # camera -> world rotation (pitch about X, then yaw about Y); camera axes x right, y up, z fwd
        rot = np.array([[cyaw, 0, syaw], [0, 1, 0], [-syaw, 0, cyaw]]) @ np.array(
            [[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
        cam = np.array([cam_x, cam_h, cam_z])
        u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
        dirs = np.stack([(u - cx) / f, -(v - cy) / f, np.ones_like(u)], -1) @ rot.T
        dx, dy, dz = dirs[..., 0], dirs[..., 1], dirs[..., 2]

        img = np.zeros((h, w, 3), np.float64)
        lbl = np.full((h, w), SKY, np.uint8)
        depth = np.full((h, w), np.inf)
        self._sky(img, dy, dz, dx)

        # ground plane Y = 0
        with np.errstate(divide="ignore", invalid="ignore"):
            tg = np.where(dy < -1e-6, cam_h / -dy, np.inf)
        hit = np.isfinite(tg) & (tg < 2000)
        tg = np.where(hit, tg, 0.0)
        gx, gz = cam_x + tg * dx, cam_z + tg * dz
        self._ground(img, lbl, depth, hit, tg, gx, gz)
        # facades X = +-facade_x
        for side in (-1, 1):
            with np.errstate(divide="ignore", invalid="ignore"):
                tf = np.where(side * dx > 1e-6, (side * self.facade_x - cam_x) / dx, np.inf)
            ok = np.isfinite(tf)
            fy = np.where(ok, cam_h + np.where(ok, tf, 0) * dy, -1.0)
            fz = np.where(ok, cam_z + np.where(ok, tf, 0) * dz, 0.0)
            self._facade(img, lbl, depth, side, tf, fy, fz)
        rays = Rays(cam, dirs, depth, f)
        self._draw_objects(img, lbl, rot, rays, f, cx, cy, t)
        return self._finish(img, rng), lbl, depth

    def _sky(self, img: np.ndarray, dy: np.ndarray, dz: np.ndarray, dx: np.ndarray) -> None:
        elev = np.clip(dy / np.sqrt(dx ** 2 + dy ** 2 + dz ** 2), -0.2, 1.0)[..., None]
        if self.sky_mode == 0:
            hor, zen = np.array([0.75, 0.85, 0.95]), np.array([0.25, 0.5, 0.9])
        elif self.sky_mode == 1:
            hor, zen = np.array([0.82, 0.83, 0.85]), np.array([0.62, 0.64, 0.68])
        else:
            hor, zen = np.array([0.98, 0.7, 0.45]), np.array([0.35, 0.4, 0.7])
        k = np.clip(elev * 2.5, 0, 1)
        img[:] = hor * (1 - k) + zen * k
        with np.errstate(divide="ignore", invalid="ignore"):
            a = np.where(dy > 1e-3, dx / dy, 0) * 40
            b = np.where(dy > 1e-3, dz / dy, 0) * 40
        c = sample_texture(self.cloud, a, b, 1.0)
        cloud = np.clip((c - 0.5) * 3, 0, 1)[..., None] * (dy > 0)[..., None]
        img[:] = img * (1 - 0.8 * cloud) + 0.95 * 0.8 * cloud

    def _ground(self, img, lbl, depth, hit, tg, gx, gz) -> None:
        ax = np.abs(gx)
        n1 = sample_texture(self.tex[2], gx, gz, 40.0)
        n2 = sample_texture(self.tex[0], gx, gz, 6.0)
        road = hit & (ax < self.road_half)
        side = hit & (ax >= self.road_half) & (ax < self.facade_x + 0.5)
        park = hit & (ax >= self.facade_x + 0.5)
        col = np.zeros(img.shape)
        col[road] = self.asphalt * (0.8 + 0.3 * n1[road] + 0.15 * n2[road])[:, None]
        # lane markings: dashed centre/lane lines, solid edge lines
        lane_w = self.road_half / self.lanes
        mark = np.zeros_like(road)
        for k in range(-self.lanes + 1, self.lanes):
            dashed = (np.mod(gz, 9.0) < 3.5) if k != 0 or self.lanes == 1 else np.ones_like(road)
            mark |= road & (np.abs(gx - k * lane_w) < 0.08) & dashed
        mark |= road & (np.abs(ax - (self.road_half - 0.3)) < 0.07)
        col[mark] = np.array([0.92, 0.92, 0.88]) * (0.85 + 0.15 * n1[mark])[:, None]
        tile = self.tile
        grout = (np.mod(gx, tile) < 0.04) | (np.mod(gz, tile) < 0.04)
        col[side] = self.pavement * (0.85 + 0.2 * n1[side] + 0.1 * n2[side])[:, None]
        col[side & grout] *= 0.78
        curb = side & (ax < self.road_half + 0.18)
        col[curb] = np.array([0.75, 0.75, 0.74]) * (0.9 + 0.1 * n1[curb])[:, None]
        col[park] = self.grass * (0.7 + 0.5 * n1[park] + 0.3 * n2[park])[:, None]
        shadow = hit & (self.shadow_side * gx > self.shadow_side * self.shadow_x)
        col[shadow] *= self.shadow_strength
        img[hit] = col[hit]
        lbl[road] = ROAD
        lbl[side] = SIDEWALK
        lbl[park] = VEGETATION
        depth[hit] = tg[hit]

    def _facade(self, img, lbl, depth, side, tf, fy, fz) -> None:
        segs = self.facades[side]
        bounds = np.array([s.z0 for s in segs] + [segs[-1].z1])
        idx = np.clip(np.searchsorted(bounds, fz, side="right") - 1, 0, len(segs) - 1)
        heights = np.array([s.height for s in segs])[idx]
        vis = np.isfinite(tf) & (tf < depth) & (fy >= 0) & (fy < heights) & (fz > bounds[0])
        if not vis.any():
            return
        base = np.stack([s.color for s in segs])[idx[vis]]
        win = np.stack([s.window_color for s in segs])[idx[vis]]
        floor_h = np.array([s.floor_h for s in segs])[idx[vis]]
        win_dx = np.array([s.win_dx for s in segs])[idx[vis]]
        y, z = fy[vis], fz[vis]
        n = sample_texture(self.tex[1], y, z, 12.0)
        col = base * (0.8 + 0.35 * n)[:, None]
        fm, zm = np.mod(y, floor_h) / floor_h, np.mod(z - bounds[idx[vis]], win_dx) / win_dx
        window = (y > floor_h) & (fm > 0.3) & (fm < 0.8) & (zm > 0.25) & (zm < 0.75)
        glass = win * (0.7 + 0.8 * sample_texture(self.tex[0], y, z, 3.0))[:, None]
        col[window] = glass[window]
        shop = (y < floor_h * 0.85) & (zm > 0.1) & (zm < 0.9)
        col[shop & ~window] = (win * 0.6 + 0.05)[shop & ~window]
        top = (heights[vis] - y) < 0.4  # cornice
        col[top] *= 0.7
        if side == self.shadow_side:
            col *= self.shadow_strength * 1.1
        img[vis] = col
        lbl[vis] = BUILDING
        depth[vis] = tf[vis]

    def _draw_objects(self, img, lbl, rot, rays: Rays, f, cx, cy, t) -> None:
        inv, cam = rot.T, rays.cam
        items = []
        for ob in self.objects:
            z = ob.z + ob.vz * t
            rel = inv @ (np.array([ob.x, 0.0, z]) - cam)
            if rel[2] < 1.5 or rel[2] > MAX_DISTANCE[ob.kind]:
                continue
            half_w, half_l = ob.size[0] / 2 + 0.8, (ob.size[2] if ob.kind == "car" else 0.5) / 2 + 1.5
            if abs(ob.x - cam[0]) < half_w and abs(z - cam[2]) < half_l:
                continue  # the camera would be inside it
            items.append((rel[2], ob, z))
        items.sort(key=lambda it: -it[0])

        def project(p: np.ndarray) -> np.ndarray:
            r = (p - cam) @ inv.T
            zc = np.maximum(r[..., 2], 0.3)
            return np.stack([cx + f * r[..., 0] / zc, cy - f * r[..., 1] / zc], -1)

        for dist, ob, z in items:
            scale = f / dist
            if ob.kind == "tree":
                draw_tree(img, lbl, ob, z, project, scale, rays, self.tex[2])
            elif ob.kind == "car":
                draw_car(img, lbl, ob, z, project, rays, self.tex[0])
            else:
                draw_person(img, lbl, ob, z, project, scale, rays)

    def _finish(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = img * self.sun_gain * self.tint
        h, w = out.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w]
        vign = 1 - 0.25 * (((xx - w / 2) / w) ** 2 + ((yy - h / 2) / h) ** 2) * 2
        out = out * vign[..., None] * 255.0
        out = cv2.GaussianBlur(out.astype(np.float32), (3, 3), 0.6)
        out += rng.normal(0, self.noise_sigma, out.shape).astype(np.float32)
        return np.clip(out, 0, 255).astype(np.uint8)


def generate_scene(seed: int, size: tuple[int, int] = (240, 320)) -> tuple[np.ndarray, np.ndarray]:
    """One random street view (new world and camera pose per seed): RGB image and labels."""
    world = StreetWorld(seed)
    rng = np.random.default_rng([seed, 1])
    lateral = max(0.3, world.road_half - 2.6)  # on the carriageway, clear of the parked cars
    return world.render(
        size, cam_z=float(rng.uniform(0, 200)), cam_x=float(rng.uniform(-lateral, lateral)),
        cam_h=float(rng.uniform(1.2, 2.2)), yaw_deg=float(rng.uniform(-12, 12)),
        pitch_deg=float(rng.uniform(-6, 4)), t=float(rng.uniform(0, 20)),
        fov_deg=float(rng.uniform(60, 85)), rng=rng,
    )


@dataclass
class Frame:
    """One frame of a drive: time (s), RGB image, labels; depth (metres, inf = sky) when asked for."""

    t: float
    image: np.ndarray
    labels: np.ndarray
    depth: np.ndarray | None = None


def drive_sequence(
    seed: int, num_frames: int = 80, size: tuple[int, int] = (240, 320), fps: float = 10.0,
    speed: float = 8.0, with_depth: bool = False,
) -> Iterator[Frame]:
    """A smooth drive down one street: the camera moves forward at ``speed`` m/s with a gentle
    lateral sway and heading change; cars and pedestrians move too. ``with_depth``: each frame
    also carries the exact depth (K = :func:`camera_matrix` of ``size``, 70 degrees)."""
    world = StreetWorld(seed)
    lane = world.road_half / world.lanes * 0.5
    # keep the ego path clear: no car or pedestrian the camera would drive through
    world.objects = [o for o in world.objects
                     if o.kind == "tree" or abs(o.x - lane) > o.size[0] / 2 + 1.4]
    for i in range(num_frames):
        t = i / fps
        img, lbl, depth = world.render_with_depth(
            size, cam_z=5.0 + speed * t, cam_x=lane + 0.4 * math.sin(0.5 * t),
            yaw_deg=3.0 * math.sin(0.35 * t), pitch_deg=-1.0 + 0.5 * math.sin(1.3 * t), t=t,
            rng=np.random.default_rng([seed, i]),
        )
        yield Frame(t, img, lbl, depth if with_depth else None)


def write_dataset(out: str | Path, count: int, seed: int = 0, size: tuple[int, int] = (240, 320),
                  progress: bool = False) -> Path:
    """Write ``count`` scenes (seeds ``seed .. seed+count-1``) as ``images/``+``labels/`` PNGs."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    seeds = range(seed, seed + count)
    if progress:
        from ..progress import progress_bar
        seeds = progress_bar(seeds, desc="scenes", unit="img")
    for s in seeds:
        img, lbl = generate_scene(s, size)
        cv2.imwrite(str(out / "images" / f"scene_{s:06d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(out / "labels" / f"scene_{s:06d}.png"), lbl)
    return out
