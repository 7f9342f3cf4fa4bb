"""The figures that show what one accuracy number hides, drawn once for both the eval task (PNG files) and the
training dashboards (TensorBoard images): confusion matrix, reliability diagram, confident mistakes, and the
captioned prediction grid.

Figures are matplotlib `Figure`s drawn with Agg and never registered with pyplot: no display needed, no global
backend switched (safe inside notebooks and training processes).
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

WRONG, RIGHT = (200, 20, 20), (20, 130, 20)  # caption colours of the prediction grid


def _figure(**kwargs):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    fig.savefig(path, dpi=dpi)
    return Path(path)


def figure_array(fig) -> np.ndarray:
    """The figure rendered at its own dpi, as an HxWx3 uint8 array (what TensorBoard's add_image takes)."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def plot_confusion_matrix(matrix: torch.Tensor, class_names: list[str], title: str, dpi: int = 100):
    """The confusion matrix (rows: true class, columns: predicted): counts in each cell, coloured by the row's
    share (recall per true class). Up to 30 classes the cells are numbered; up to 100 the axes are labelled."""
    c = len(class_names)
    cm = matrix.detach().cpu().float()
    share = cm / cm.sum(dim=1, keepdim=True).clamp(min=1)
    side = min(20.0, max(4.0, 0.55 * c + 2.5))
    fig = _figure(figsize=(side + 1, side), dpi=dpi)
    ax = fig.subplots()
    im = ax.imshow(share.numpy(), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if c <= 100:
        ax.set_xticks(range(c), class_names, rotation=45 if c > 4 else 0, ha="right" if c > 4 else "center")
        ax.set_yticks(range(c), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if c <= 30:
        for i in range(c):
            for j in range(c):
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=9 if c <= 12 else 6,
                        color="white" if share[i, j] > 0.5 else "black")
    fig.tight_layout()
    return fig


def plot_reliability(bins: list[dict[str, float]], ece: float):
    """Reliability diagram (accuracy vs confidence per bin, gap to the diagonal) over a confidence histogram.

    `bins` as `evaluation.metrics.reliability_bins` returns them."""
    width = bins[0]["high"] - bins[0]["low"]
    centres = [(b["low"] + b["high"]) / 2 for b in bins]
    fig = _figure(figsize=(5, 6))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    used = [(c, b["accuracy"], b["confidence"]) for c, b in zip(centres, bins, strict=True) if b["count"]]
    x, acc, conf = ([u[i] for u in used] for i in range(3))
    top.bar(x, acc, width=width, edgecolor="black", color="tab:blue", label="accuracy")
    top.bar(x, [abs(c - a) for a, c in zip(acc, conf, strict=True)], width=width, fill=False,
            bottom=[min(a, c) for a, c in zip(acc, conf, strict=True)], edgecolor="tab:red", hatch="//",
            label="gap to mean confidence")
    top.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    top.set_ylabel("accuracy")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.legend(loc="upper left")
    top.set_title(f"Reliability diagram: ECE {ece:.4f} ({len(bins)} bins)")
    bottom.bar(centres, [b["count"] for b in bins], width=width, color="gray", edgecolor="black")
    bottom.set_xlabel("confidence (top-1 probability)")
    bottom.set_ylabel("images")
    fig.tight_layout()
    return fig


def plot_mistakes(mistakes: list[dict[str, Any]]):
    """A grid of wrongly classified images, titled true / predicted (probability).

    `mistakes` as `evaluation.metrics.confident_mistakes` returns them (file, true, predicted, prob)."""
    from transferlab.data.images import load_rgb

    if not mistakes:
        fig = _figure(figsize=(4, 1.5))
        ax = fig.subplots()
        ax.text(0.5, 0.5, "No misclassified images", ha="center", va="center")
        ax.axis("off")
    else:
        cols = min(4, len(mistakes))
        rows = math.ceil(len(mistakes) / cols)
        fig = _figure(figsize=(3 * cols, 3.3 * rows))
        axes = fig.subplots(rows, cols, squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, m in zip(axes.flat, mistakes, strict=False):
            image = load_rgb(m["file"])
            image.thumbnail((256, 256))
            ax.imshow(image)
            ax.set_title(f"true: {m['true']}\npred: {m['predicted']} ({m['prob']:.2f})", fontsize=9, color="tab:red")
        fig.suptitle("Most confidently wrong")
    fig.tight_layout()
    return fig


def prediction_grid(paths: list[str], preds: list[int], targets: list[int], class_names: list[str],
                    tile_size: int = 128, nrow: int = 8) -> torch.Tensor:
    """Images captioned `pred <class>` / `true <class>` (red when wrong), as one CxHxW grid in [0, 1]."""
    from PIL import Image, ImageDraw, ImageFont
    from torchvision.transforms.functional import pil_to_tensor
    from torchvision.utils import make_grid

    font = ImageFont.load_default(size=max(9, tile_size // 11))
    line = font.getbbox("Ag")[3] + 2
    tiles = []
    for path, pred, true in zip(paths, preds, targets, strict=True):
        tile = Image.new("RGB", (tile_size, tile_size + 2 * line + 4), "white")
        tile.paste(_thumbnail(path, tile_size, os.stat(path).st_mtime_ns), (0, 0))
        draw = ImageDraw.Draw(tile)
        colour = RIGHT if pred == true else WRONG
        draw.text((2, tile_size + 1), _fit(f"pred {class_names[pred]}", font, tile_size - 4), fill=colour, font=font)
        draw.text((2, tile_size + 1 + line), _fit(f"true {class_names[true]}", font, tile_size - 4), fill="black",
                  font=font)
        tiles.append(pil_to_tensor(tile).float() / 255)
    return make_grid(tiles, nrow=min(nrow, len(tiles)), padding=3, pad_value=1.0)


@functools.lru_cache(maxsize=512)
def _thumbnail(path: str, tile_size: int, mtime_ns: int):
    """A square thumbnail, decoded once per file: the grid shows mostly the same images every epoch."""
    from PIL import ImageOps

    from transferlab.data.images import load_rgb

    return ImageOps.fit(load_rgb(path), (tile_size, tile_size))


def _fit(text: str, font: Any, width: int) -> str:
    while len(text) > 1 and font.getlength(text) > width:
        text = text[:-2] + "…"
    return text
