"""The pieces :class:`bisenet_ros.data.synthetic_scenes.StreetWorld` draws a street with: value-noise
textures, per-pixel camera rays with their depth buffer (:class:`Rays`), facades and objects
(:class:`Facade`, :class:`StreetObject`), and the painters of cars, pedestrians and trees, which
fill a polygon's pixels in the image, its class in the labels and its depth in the rays.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: class ids of the generated labels, in the order of the ``synthetic_street`` preset
CLASSES: tuple[str, ...] = ("road", "sidewalk", "building", "sky", "vegetation", "car", "person")
ROAD, SIDEWALK, BUILDING, SKY, VEGETATION, CAR, PERSON = range(len(CLASSES))


def value_noise(rng: np.random.Generator, size: int = 256, cells: int = 16, octaves: int = 3) -> np.ndarray:
    """Tileable-ish value noise in [0, 1], (size, size) float32."""
    out = np.zeros((size, size), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        n = cells * (2 ** o)
        grid = rng.random((n, n)).astype(np.float32)
        out += amp * cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= 0.5
    out /= total
    return np.clip((out - out.min()) / max(float(np.ptp(out)), 1e-6), 0, 1)


def sample_texture(tex: np.ndarray, a: np.ndarray, b: np.ndarray, scale: float) -> np.ndarray:
    """Sample a square texture at world coordinates (a, b) (metres) with wrap-around."""
    n = tex.shape[0]
    i = (np.floor(a * scale).astype(np.int64)) % n
    j = (np.floor(b * scale).astype(np.int64)) % n
    return tex[i, j]


@dataclass
class Rays:
    """Per-pixel camera rays of one render and its depth buffer (z along the optical axis).

    ``dirs`` (H, W, 3, world frame) have a camera-frame z of 1, so a ray parameter is a depth.
    """

    cam: np.ndarray
    dirs: np.ndarray
    depth: np.ndarray
    focal: float

    def paint(self, mask: np.ndarray, surface: np.ndarray) -> None:
        """Depth of ``surface`` at the pixels of ``mask``: (2, 3) = an axis-aligned box (lo, hi),
        nearest entry; (N >= 3, 3) = the plane through the first three points."""
        d = self.dirs[mask]
        with np.errstate(divide="ignore", invalid="ignore"):
            if surface.shape[0] == 2:
                t, miss = self._slab(d, surface[0], surface[1])
                # polygon fill marks pixels whose centre ray just misses the silhouette (< 1 px):
                # those take the box grown by one pixel's footprint at their depth
                grow = np.where(np.isfinite(t), t, 0.0)[miss, None] * 1.5 / self.focal
                t[miss] = self._slab(d[miss], surface[0] - grow, surface[1] + grow)[0]
            else:
                n = np.cross(surface[1] - surface[0], surface[2] - surface[0])
                t = (n @ (surface[0] - self.cam)) / (d @ n)
        ok = np.isfinite(t) & (t > 0)
        self.depth[mask] = np.where(ok, t, self.depth[mask])

    def _slab(self, d: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Entry ray parameter into the box(es) [lo, hi] and whether each ray misses."""
        t1, t2 = (lo - self.cam) / d, (hi - self.cam) / d
        near = np.nanmax(np.minimum(t1, t2), axis=1)
        far = np.nanmin(np.maximum(t1, t2), axis=1)
        return near, ~(near <= far)


@dataclass
class Facade:
    z0: float
    z1: float
    height: float  # 0 = gap (park)
    color: np.ndarray  # RGB 0..1
    window_color: np.ndarray
    floor_h: float
    win_dx: float


@dataclass
class StreetObject:
    kind: str  # "car", "person", "tree"
    x: float
    z: float
    vz: float  # forward speed (m/s) for moving objects
    size: tuple[float, float, float]  # width, height, length (trees: crown radius, trunk h, -)
    color: np.ndarray
    color2: np.ndarray


def fill(img, lbl, pts: np.ndarray, color, cls: int | None, shade: np.ndarray | None = None,
          rays: Rays | None = None, surface: np.ndarray | None = None) -> None:
    poly = np.round(pts * 4).astype(np.int32).reshape(-1, 1, 2)  # 2 bits of sub-pixel precision
    mask = np.zeros(lbl.shape, np.uint8)
    cv2.fillPoly(mask, [poly], 1, lineType=cv2.LINE_8, shift=2)
    m = mask.astype(bool)
    if not m.any():
        return
    c = np.asarray(color, np.float64)
    img[m] = c if shade is None else c * shade[m][:, None]
    if cls is not None:
        lbl[m] = cls
    if rays is not None and surface is not None:
        rays.paint(m, surface)

def box(x0, x1, y0, y1, z0, z1) -> np.ndarray:
    return np.array([[x, y, z] for x in (x0, x1) for y in (y0, y1) for z in (z0, z1)], np.float64)

def draw_car(img, lbl, ob: StreetObject, z, project, rays: Rays, tex: np.ndarray) -> None:
    """A car as boxes (body, cabin, wheels), its shadow, the face towards the camera, lights."""
    cam = rays.cam
    wdt, hgt, length = ob.size
    x0, x1 = ob.x - wdt / 2, ob.x + wdt / 2
    z0, z1 = z - length / 2, z + length / 2
    shade = 0.75 + 0.25 * sample_texture(tex, *np.indices(lbl.shape), 0.5)
    # shadow under the car
    sh = project(np.array([[x0 - 0.2, 0.01, z0 - 0.3], [x1 + 0.2, 0.01, z0 - 0.3],
                           [x1 + 0.2, 0.01, z1 + 0.3], [x0 - 0.2, 0.01, z1 + 0.3]]))
    fill(img, lbl, sh, img[min(max(int(sh[0, 1]), 0), lbl.shape[0] - 1),
                                 min(max(int(sh[0, 0]), 0), lbl.shape[1] - 1)] * 0.45, None)
    body_box = np.array([[x0, 0.25, z0], [x1, hgt * 0.55, z1]])
    cabin_box = np.array([[x0 + 0.15, hgt * 0.5, z0 + length * 0.22], [x1 - 0.15, hgt, z1 - length * 0.25]])
    for wz in (z0 + 0.8, z1 - 0.8):  # wheels
        for wx in (x0 + 0.05, x1 - 0.25):
            wheel = np.array([[wx, 0.0, wz - 0.33], [wx + 0.2, 0.6, wz + 0.33]])
            fill(img, lbl, hull(project(box(*wheel.T.ravel()))), (0.05, 0.05, 0.05), CAR,
                       rays=rays, surface=wheel)
    fill(img, lbl, hull(project(box(*cabin_box.T.ravel()))), ob.color2 * 1.2, CAR, shade,
               rays, cabin_box)
    fill(img, lbl, hull(project(box(*body_box.T.ravel()))), ob.color, CAR, shade,
               rays, body_box)
    # face towards the camera (rear or front), with lights and a dark window band
    zf = z0 if cam[2] < z0 else z1
    face = np.array([[x0, 0.25, zf], [x1, 0.25, zf], [x1, hgt * 0.55, zf], [x0, hgt * 0.55, zf]])
    fill(img, lbl, project(face), ob.color * 0.85, CAR, shade, rays, face)
    win = np.array([[x0 + 0.25, hgt * 0.58, zf + (0.9 if zf == z0 else -0.9)],
                    [x1 - 0.25, hgt * 0.58, zf + (0.9 if zf == z0 else -0.9)],
                    [x1 - 0.3, hgt * 0.95, zf + (1.3 if zf == z0 else -1.3)],
                    [x0 + 0.3, hgt * 0.95, zf + (1.3 if zf == z0 else -1.3)]])
    fill(img, lbl, project(win), ob.color2, CAR, rays=rays, surface=win)
    light = (0.85, 0.1, 0.08) if zf == z0 else (0.95, 0.95, 0.8)
    for lx in (x0 + 0.1, x1 - 0.35):
        lamp = np.array([[lx, hgt * 0.4, zf], [lx + 0.25, hgt * 0.4, zf], [lx + 0.25, hgt * 0.5, zf],
                         [lx, hgt * 0.5, zf]])
        fill(img, lbl, project(lamp), light, CAR, rays=rays, surface=lamp)

def hull(pts: np.ndarray) -> np.ndarray:
    return cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2)

def draw_person(img, lbl, ob: StreetObject, z, project, scale, rays: Rays) -> None:
    """A pedestrian drawn flat at depth ``z``: legs, body, arms, head."""
    wdt, hgt, _ = ob.size
    x = ob.x
    legs = hgt * 0.47
    plane = np.array([[x, 0.0, z], [x + 1.0, 0.0, z], [x, 1.0, z]])  # a flat figure at Z = z

    def quad(xa, xb, ya, yb):
        return project(np.array([[xa, ya, z], [xb, ya, z], [xb, yb, z], [xa, yb, z]]))

    for lx in (x - wdt * 0.22, x + wdt * 0.05):
        fill(img, lbl, quad(lx, lx + wdt * 0.17, 0.0, legs), ob.color2, PERSON, rays=rays, surface=plane)
    fill(img, lbl, quad(x - wdt / 2, x + wdt / 2, legs * 0.95, hgt * 0.84), ob.color, PERSON,
               rays=rays, surface=plane)
    for ax in (x - wdt / 2 - 0.08, x + wdt / 2):  # arms
        fill(img, lbl, quad(ax, ax + 0.08, hgt * 0.45, hgt * 0.82), ob.color * 0.8, PERSON,
                   rays=rays, surface=plane)
    c = project(np.array([x, hgt * 0.92, z]))
    r = max(1, int(round(hgt * 0.08 * scale)))
    mask = np.zeros(lbl.shape, np.uint8)
    cv2.circle(mask, (int(round(c[0])), int(round(c[1]))), r, 1, -1)
    m = mask.astype(bool)
    img[m] = np.array([0.85, 0.65, 0.5]) * (0.5 + 0.5 * (ob.color2.sum() / 1.8))
    lbl[m] = PERSON
    rays.paint(m, plane)

def draw_tree(img, lbl, ob: StreetObject, z, project, scale, rays: Rays, tex: np.ndarray) -> None:
    """A tree drawn flat at depth ``z``: trunk and a crown of textured discs."""
    r, trunk_h, _ = ob.size
    x = ob.x
    plane = np.array([[x, 0.0, z], [x + 1.0, 0.0, z], [x, 1.0, z]])  # trunk and crown drawn flat at Z = z
    fill(img, lbl, project(np.array([[x - 0.15, 0, z], [x + 0.15, 0, z],
                                           [x + 0.12, trunk_h + r * 0.5, z], [x - 0.12, trunk_h + r * 0.5, z]])),
               ob.color2, VEGETATION, rays=rays, surface=plane)
    mask = np.zeros(lbl.shape, np.uint8)
    rng = np.random.default_rng(int(abs(x) * 1000 + z * 10))
    for _ in range(6):
        off = rng.uniform(-0.6, 0.6, 2) * r
        c = project(np.array([x + off[0], trunk_h + r + off[1] * 0.7, z]))
        rad = max(1, int(round(r * rng.uniform(0.55, 0.85) * scale)))
        cv2.circle(mask, (int(round(c[0])), int(round(c[1]))), rad, 1, -1)
    m = mask.astype(bool)
    if m.any():
        n = sample_texture(tex, *np.indices(lbl.shape), 1.0)[m]
        img[m] = ob.color * (0.55 + 0.9 * n)[:, None]
        lbl[m] = VEGETATION
        rays.paint(m, plane)
