"""`write_html(report, folder)`: the quality report as one self-contained page (thumbnails inlined as base64
JPEG), each finding's images side by side: a leaked val image next to its train twin, a suspected mislabel
next to examples of its given and of its suggested class, an outlier next to nothing it resembles."""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image

from transferlab.files import atomic_write_text
from transferlab.quality.report import KINDS, WHAT, QualityReport

THUMB = 160
EXAMPLES = 3
STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}h2{margin-top:1.6em}"
    ".f{display:flex;gap:12px;align-items:flex-start;border-bottom:1px solid #ddd;padding:10px 0}"
    f".meta{{width:220px;font-size:13px}}.img{{text-align:center;font-size:11px;width:{THUMB}px;word-break:break-all}}"
    f".img img{{max-width:{THUMB}px;max-height:{THUMB}px;display:block;margin:0 auto 4px}}.sep{{width:18px}}"
    ".given{outline:3px solid #c33}.sugg{outline:3px solid #393}")


def _thumb(path: str) -> str:
    try:
        with Image.open(path) as im:
            im.draft("RGB", (THUMB * 2, THUMB * 2))
            im = im.convert("RGB")
            im.thumbnail((THUMB, THUMB))
            out = io.BytesIO()
            im.save(out, "JPEG", quality=80)
        return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode()
    except OSError:
        return ""


def _figure(root: str, rel: str, css: str = "") -> str:
    src = _thumb(os.path.join(root, rel))
    return (f'<div class="img"><img class="{css}" src="{src}" alt="{html.escape(rel)}">'
            f"{html.escape(rel)}</div>")


def render(report: QualityReport, examples: Mapping[str, Sequence[str]], limit: int = 50) -> str:
    """The page. `examples`: class name -> a few training images of it (relative paths)."""
    parts = [f"<!doctype html><meta charset='utf-8'><title>Quality check: {html.escape(report.root)}</title>",
             f"<style>{STYLE}</style><h1>Quality check</h1><p>{html.escape(report.root)}: "
             + ", ".join(f"{n} {s}" for s, n in report.images.items()) + " images</p>"]
    for kind in KINDS:
        found = report.of(kind)
        parts.append(f"<h2>{html.escape(WHAT[kind])}: {len(found)}</h2>")
        for f in found[:limit]:
            meta = f"<div class='meta'><b>{kind}</b><br>score {f.score:.3f}"
            if kind == "label":
                meta += f"<br>given <b>{html.escape(f.given)}</b><br>suggested <b>{html.escape(f.suggested)}</b>"
            figures = [_figure(report.root, p) for p in f.files]
            if kind == "label":
                figures.append("<div class='sep'></div>")
                figures += [_figure(report.root, p, "given") for p in examples.get(f.given, [])[:EXAMPLES]]
                figures.append("<div class='sep'></div>")
                figures += [_figure(report.root, p, "sugg") for p in examples.get(f.suggested, [])[:EXAMPLES]]
            parts.append(f"<div class='f'>{meta}</div>{''.join(figures)}</div>")
        if len(found) > limit:
            parts.append(f"<p>... {len(found) - limit} more in the JSON report</p>")
    return "\n".join(parts)


def write_html(report: QualityReport, folder: str | os.PathLike, examples: Mapping[str, Sequence[str]]) -> Path:
    """Write `folder/index.html` (atomically); returns its path."""
    path = Path(folder) / "index.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, render(report, examples))
    return path
