"""Compares featcache's preprocessed tensors with torchvision's eval transform on the same PIL images.

Usage: python torchvision_parity.py SPEC.json
SPEC: {"images": [...], "presets": [{"name", "resizeShorter", "crop", "mean", "std", "tensors": FILE}]}, where
FILE holds featcache's NCHW float32 tensors for the images, in order. Prints JSON per preset: max and mean abs
difference in normalised units, the largest difference in 8-bit levels (before normalisation), the share of values
exactly equal, and whether torchvision.transforms (v1) and transforms.v2 agree with each other.
"""
import json
import sys

import numpy as np
import torch
from PIL import Image

from torchvision_cpu import transforms, v2

spec = json.load(open(sys.argv[1], encoding="utf-8"))
result = {}
for preset in spec["presets"]:
    resize, crop, mean, std = preset["resizeShorter"], preset["crop"], preset["mean"], preset["std"]
    tv1 = transforms.Compose(
        [transforms.Resize(resize), transforms.CenterCrop(crop), transforms.ToTensor(), transforms.Normalize(mean, std)]
    )
    tv2 = v2.Compose(
        [
            v2.Resize(resize, antialias=True),
            v2.CenterCrop(crop),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean, std),
        ]
    )
    ours = np.fromfile(preset["tensors"], dtype="<f4").reshape(len(spec["images"]), 3, crop, crop)
    std_a = np.array(std, np.float32)[:, None, None]
    mean_a = np.array(mean, np.float32)[:, None, None]
    max_abs, sum_abs, max_levels, equal, count, v1_v2, worst_image = 0.0, 0.0, 0.0, 0, 0, 0.0, None
    for i, path in enumerate(spec["images"]):
        img = Image.open(path).convert("RGB")
        a = tv1(img).numpy()
        v1_v2 = max(v1_v2, float(np.abs(tv2(img).numpy() - a).max()))
        d = np.abs(ours[i] - a)
        if float(d.max()) > max_abs:
            max_abs, worst_image = float(d.max()), path
        sum_abs += float(d.sum())
        count += d.size
        # Back to 8-bit levels: featcache's and torchvision's crops are both whole levels before normalisation.
        levels = np.abs(np.rint((ours[i] * std_a + mean_a) * 255) - np.rint((a * std_a + mean_a) * 255))
        max_levels = max(max_levels, float(levels.max()))
        equal += int((levels == 0).sum())
    result[preset["name"]] = {
        "maxAbs": max_abs,
        "meanAbs": sum_abs / count,
        "maxLevels": max_levels,
        "equalShare": equal / count,
        "worstImage": worst_image,
        "v1VsV2MaxAbs": v1_v2,
    }
print(json.dumps(result))
