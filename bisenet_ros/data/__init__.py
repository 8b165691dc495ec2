"""Data in and out: image encodings and buffers, bags, videos, dataset presets, class remaps,
depth to point clouds, and synthetic street scenes."""
