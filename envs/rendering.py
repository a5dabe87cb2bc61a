"""Tiny dependency-free rasteriser for ``render_mode="rgb_array"`` of the classic envs."""

from __future__ import annotations

import numpy as np


def draw_segments(
    segments: list[tuple[tuple[float, float], tuple[float, float], tuple[int, int, int], float]],
    half_extent: float,
    size: int = 200,
) -> np.ndarray:
    """Draw thick line segments on a white ``[size, size, 3]`` uint8 image.

    Args:
        segments: ``((x0, y0), (x1, y1), rgb, width)`` in world units, y up.
        half_extent: the image shows ``[-half_extent, half_extent]`` on both axes.
    """
    img = np.full((size, size, 3), 255, dtype=np.uint8)
    scale = size / (2.0 * half_extent)
    ys, xs = np.mgrid[0:size, 0:size]
    px = (xs + 0.5) / scale - half_extent
    py = half_extent - (ys + 0.5) / scale
    for (x0, y0), (x1, y1), rgb, width in segments:
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((px - x0) * dx + (py - y0) * dy) / max(dx * dx + dy * dy, 1e-12), 0.0, 1.0)
        dist2 = (px - x0 - t * dx) ** 2 + (py - y0 - t * dy) ** 2
        img[dist2 <= (width / 2.0) ** 2] = rgb
    return img
