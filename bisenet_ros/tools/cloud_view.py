"""Pictures of a labelled point cloud without rviz2: a perspective view from above and behind the
camera, and a top-down (bird's-eye) view. Points are in the camera's optical frame (x right, y
down, z forward, metres) and drawn with a depth test (the nearest point wins a pixel)."""
from __future__ import annotations

import math

import numpy as np

BACKGROUND = (236, 236, 232)


def splat(px: np.ndarray, py: np.ndarray, depth: np.ndarray, colours: np.ndarray, size: tuple[int, int],
          radius: int = 1) -> np.ndarray:
    """Draw points at pixel (px, py) as (2 radius + 1)^2 squares; the smallest ``depth`` wins."""
    h, w = size
    canvas = np.empty((h, w, 3), np.uint8)
    canvas[:] = BACKGROUND
    ix, iy = np.round(px).astype(np.int64), np.round(py).astype(np.int64)
    offsets = [(dx, dy) for dx in range(-radius, radius + 1) for dy in range(-radius, radius + 1)]
    xs = np.concatenate([ix + dx for dx, _ in offsets])
    ys = np.concatenate([iy + dy for _, dy in offsets])
    ds = np.tile(depth, len(offsets))
    cs = np.tile(np.arange(len(depth)), len(offsets))
    inside = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
    xs, ys, ds, cs = xs[inside], ys[inside], ds[inside], cs[inside]
    order = np.lexsort((ds, ys * w + xs))  # by pixel, nearest first
    pix = (ys * w + xs)[order]
    first = np.ones(len(pix), bool)
    first[1:] = pix[1:] != pix[:-1]
    canvas.reshape(-1, 3)[pix[first]] = colours[cs[order][first]]
    return canvas


def perspective_view(xyz: np.ndarray, colours: np.ndarray, size: tuple[int, int], height: float = 4.0,
                     back: float = 8.0, side: float = -2.0, yaw_deg: float = 12.0, pitch_deg: float = 16.0,
                     fov_deg: float = 60.0) -> np.ndarray:
    """The cloud from a virtual camera ``height`` m above, ``back`` m behind and ``side`` m right of
    the real one (negative: left), turned by ``yaw_deg`` (positive: to the right), pitched down by ``pitch_deg``."""
    h, w = size
    p = xyz - np.array([side, -height, -back])  # optical frame: up is -y
    cy, sy = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    x = cy * p[:, 0] - sy * p[:, 2]
    z = sy * p[:, 0] + cy * p[:, 2]
    cp, sp = math.cos(math.radians(pitch_deg)), math.sin(math.radians(pitch_deg))
    y, z = cp * p[:, 1] - sp * z, sp * p[:, 1] + cp * z
    ok = z > 0.5
    f = 0.5 * w / math.tan(math.radians(fov_deg) / 2)
    return splat((w - 1) / 2 + f * x[ok] / z[ok], (h - 1) / 2 + f * y[ok] / z[ok], z[ok], colours[ok], size)


def top_down_view(xyz: np.ndarray, colours: np.ndarray, size: tuple[int, int], max_range: float) -> np.ndarray:
    """Bird's-eye view: x across, z up the picture (camera at the bottom centre), highest point wins."""
    h, w = size
    scale = (h - 10) / max_range
    px = (w - 1) / 2 + xyz[:, 0] * scale
    py = (h - 5) - xyz[:, 2] * scale
    canvas = splat(px, py, xyz[:, 1], colours, size)  # smallest y = highest point
    return fill_gaps(canvas, 8)  # far away, pixel rows land metres apart on the ground


def fill_gaps(canvas: np.ndarray, max_px: int) -> np.ndarray:
    """Background pixels take the colour of a drawn pixel at most ``max_px`` above or below them."""
    out = canvas.copy()
    empty = (out == BACKGROUND).all(axis=2)
    drawn = ~(canvas == BACKGROUND).all(axis=2)
    for shift in range(1, max_px + 1):
        for dst, src in ((np.s_[shift:], np.s_[:-shift]), (np.s_[:-shift], np.s_[shift:])):  # down, up
            take = empty[dst] & drawn[src]
            out[dst][take] = canvas[src][take]
            empty[dst] &= ~take
    return out


# -- the picture: four titled panels, a class legend, metres on the top-down view --------------------
PERSPECTIVE = dict(height=4.0, back=8.0, side=-2.0)


def cloud_figure(image: np.ndarray, labels: np.ndarray, xyz: np.ndarray, colours: np.ndarray, cloud_labels: np.ndarray,
                 max_depth: float, class_names: list[str] | None = None):
    """A matplotlib figure: camera | predicted classes over the labelled cloud in perspective |
    top-down (x right, z forward, in metres), with the classes present in a legend."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    h, w = image.shape[:2]
    palette = np.zeros((max(int(labels.max(initial=0)), int(cloud_labels.max(initial=0))) + 1, 3), np.uint8)
    palette[cloud_labels] = colours  # each class's colour, from the cloud's rgb field
    fig, axes = plt.subplots(2, 2, figsize=(11, 8.6))
    (cam, cls), (per, top) = axes
    cam.imshow(image)
    cam.set_title("camera image (the node's input)", fontsize=10)
    cls.imshow(palette[labels])
    cls.set_title("predicted classes (~/labels, coloured as ~/color)", fontsize=10)
    for ax in (cam, cls):
        ax.set_xlabel("pixels")
    per.imshow(perspective_view(xyz, colours, (h, w), **PERSPECTIVE))
    per.set_title(f"labelled point cloud (~/points), {len(xyz)} points:\nseen from {PERSPECTIVE['height']:g} m above, "
                  f"{PERSPECTIVE['back']:g} m behind the camera", fontsize=10)
    per.set_axis_off()
    scale = (h - 10) / max_depth  # as top_down_view draws it
    extent = (-(w - 1) / 2 / scale, (w - 1) / 2 / scale, -4 / scale, (h - 5) / scale)
    top.imshow(top_down_view(xyz, colours, (h, w), max_depth), extent=extent, aspect="equal")
    top.plot([0], [0], marker="^", color="black", markersize=8, linestyle="none")
    top.set_title(f"top-down view (bird's eye), camera at (0, 0), range {max_depth:g} m", fontsize=10)
    top.set_xlabel("x: metres to the right of the camera")
    top.set_ylabel("z: metres ahead of the camera")
    present = sorted(set(np.unique(cloud_labels).tolist()) | set(np.unique(labels).tolist()))
    names = class_names or []
    handles = [Patch(color=palette[c] / 255.0, label=names[c] if c < len(names) else f"class {c}") for c in present]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 8), fontsize=9, title="classes",
               bbox_to_anchor=(0.5, 0.0))
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig
