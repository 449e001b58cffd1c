"""One cell's trend as plain data for an inline SVG (``templates/history.html.j2`` draws it, autoescaped): the
cell's ok runs on an ordinal axis (one slot per run, oldest left, so runs started in the same second stand side by
side), one line per machine kind and method, the current band shaded behind the newest series, vertical marks labelled
by what changed at that run (torch, driver, image, method), steps as triangles; every point's title names its run.
No plotting library: the page stays one self-contained file and renders in milliseconds."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import pandas as pd

from detbench.reports.history.method import FIELDS

WIDTH, HEIGHT = 660, 230
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 22, 30
COLOURS = ("#1f5fae", "#b5530a", "#2a7d3c", "#7a3ea8", "#8a6d00", "#a3123e")
CHANGE_KEYS = (("torch", "torch"), ("driver", "driver"), ("image", "image"), ("commit", "commit"))


@dataclass
class Trend:
    """What the template draws for one cell (coordinates in the SVG's own units)."""

    cell_id: str
    title: str
    width: int = WIDTH
    height: int = HEIGHT
    lines: list[dict[str, str]] = field(default_factory=list)  # points ("x,y x,y"), colour, label
    points: list[dict[str, object]] = field(default_factory=list)  # x, y, colour, title
    bands: list[dict[str, object]] = field(default_factory=list)  # x, y, w, h, title
    marks: list[dict[str, object]] = field(default_factory=list)  # x, label, title, kind
    steps: list[dict[str, object]] = field(default_factory=list)  # path, title
    yticks: list[dict[str, object]] = field(default_factory=list)  # y, label
    legend: list[dict[str, str]] = field(default_factory=list)  # colour, label


def _ticks(low: float, high: float, count: int = 4) -> list[float]:
    span = max(high - low, 1e-9)
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step) + 1)]


def _label(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _change(before: Mapping[str, object], after: Mapping[str, object]) -> tuple[str, bool]:
    """What changed at ``after`` (short, for the mark's label) and whether the method did."""
    parts = []
    for key, name in CHANGE_KEYS:
        if key in before and str(before.get(key)) != str(after.get(key)):
            parts.append(f"{name} {after.get(key)}")
    method_changed = before.get("method_key") != after.get("method_key")
    if method_changed:
        old, new = json.loads(str(before.get("method") or "{}")), json.loads(str(after.get("method") or "{}"))
        fields = [name.replace("_", " ") for name in FIELDS if old.get(name) != new.get(name)]
        parts.append(", ".join(fields) or "post-processing")
    return ", ".join(parts), method_changed


CHAR_W = 5.6  # about one character of the 10 px label font, in SVG units


def _stagger(marks: list[dict[str, object]]) -> None:
    """Labels in up to three rows under the plot, each where it does not overlap the label before it in its row (a
    machine's name sits at the top); a label with no room keeps its mark and its hover title only."""
    ends = [-1e9, -1e9, -1e9]
    for mark in marks:
        if mark["kind"] == "machine":
            mark["y"] = TOP + 8
            continue
        x = float(mark["x"])  # type: ignore[arg-type]
        row = next((r for r in range(3) if ends[r] < x), None)
        mark["y"] = HEIGHT - BOTTOM + 10 + 9 * (row or 0)
        if row is None:
            mark["label"] = ""
        else:
            ends[row] = x + 2 + CHAR_W * len(str(mark["label"]))


def trend(cell_id: str, points: pd.DataFrame, steps: pd.DataFrame,
          bands: Mapping[str, Mapping[str, float]]) -> Trend | None:
    """``points``: the cell's ok runs (``series`` rows, oldest first); ``steps``: its rows of the steps table
    (``machine``, ``run_id``, ``change``, ``cause``); ``bands``: per machine, the band of its newest series
    (``low_ips``, ``high_ips``, ``level_ips``, ``runs``). Each machine's runs stand together, oldest left."""
    if points.empty:
        return None
    machines = list(dict.fromkeys(points["machine"]))
    points = points.assign(_m=points["machine"].map(machines.index)).sort_values("_m", kind="stable")
    points = points.drop(columns="_m").reset_index(drop=True)
    n = len(points)
    values = list(points["throughput_ips"])
    low, high = min(values), max(values)
    for band in bands.values():
        low, high = min(low, band["low_ips"]), max(high, band["high_ips"])
    pad = (high - low) * 0.08 or high * 0.05
    low, high = max(low - pad, 0.0), high + pad
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(i: int) -> float:
        return round(LEFT + (i + 0.5) * plot_w / n, 1)

    def y(v: float) -> float:
        return round(TOP + (high - v) / (high - low) * plot_h, 1)

    view = Trend(cell_id, f"History of {cell_id}")
    view.yticks = [{"y": y(t), "label": _label(t)} for t in _ticks(low, high)]
    series_keys = list(dict.fromkeys(zip(points["machine"], points["method_key"], strict=True)))
    newest = {machine: method_key for machine, method_key in series_keys}  # the last one listed per machine
    for machine, method_key in series_keys:
        colour = COLOURS[machines.index(machine) % len(COLOURS)]
        rows = points[(points["machine"] == machine) & (points["method_key"] == method_key)]
        view.lines.append({"points": " ".join(f"{x(i)},{y(v)}" for i, v in zip(rows.index, rows["throughput_ips"],
                                                                             strict=True)),
                           "colour": colour, "dash": "" if newest[machine] == method_key else "4 3"})
    for machine in machines:
        view.legend.append({"colour": COLOURS[machines.index(machine) % len(COLOURS)], "label": machine})
    wanted = ["machine", "run_at", "label", "throughput_ips", "torch", "image", "method_key", "method",
              *(key for key, _ in CHANGE_KEYS if key not in ("torch", "image"))]
    records = points[[c for c in dict.fromkeys(wanted) if c in points.columns]].to_dict("records")
    for i, row in enumerate(records):
        colour = COLOURS[machines.index(row["machine"]) % len(COLOURS)]
        when = str(row["run_at"])[:16].replace("T", " ")
        view.points.append({"x": x(i), "y": y(row["throughput_ips"]), "colour": colour,
                            "title": f"{row['label']} ({when} UTC, {row['machine']}): {row['throughput_ips']:.4g} "
                                     f"img/s; torch {row.get('torch')}, image {row.get('image') or 'n/a'}"})
        if i:
            previous = records[i - 1]
            slot = round(x(i) - plot_w / n / 2, 1)
            if previous["machine"] != row["machine"]:
                view.marks.append({"x": slot, "label": str(row["machine"])[:28], "title": f"{row['machine']} from here",
                                   "kind": "machine"})
                continue
            text, method_changed = _change(previous, row)
            if text:
                view.marks.append({"x": slot, "label": text[:32],
                                   "title": f"{row['label']}: {'method changed: ' if method_changed else ''}{text}",
                                   "kind": "method" if method_changed else "software"})
    _stagger(view.marks)
    for machine, band in bands.items():
        mine = points[(points["machine"] == machine) & (points["method_key"] == newest.get(machine))]
        if mine.empty:
            continue
        first, last = int(mine.index[0]), int(mine.index[-1])
        level_steps = steps[(steps["machine"] == machine) & steps["run_id"].isin(set(mine["run_id"]))]
        if len(level_steps):
            first = max(first, int(max(mine.index[mine["run_id"].isin(set(level_steps["run_id"]))])))
        left, right = x(first) - plot_w / n / 2, x(last) + plot_w / n / 2
        view.bands.append({"x": round(left, 1), "w": round(right - left, 1), "y": y(band["high_ips"]),
                           "h": round(y(band["low_ips"]) - y(band["high_ips"]), 1), "level": y(band["level_ips"]),
                           "title": f"{machine}: band {band['low_ips']:.4g}..{band['high_ips']:.4g} img/s "
                                    f"on {band['runs']} runs"})
    for _, step in steps.iterrows():
        hit = points.index[(points["run_id"] == step["run_id"]) & (points["machine"] == step["machine"])]
        if not len(hit) or step["cause"] != "level":
            continue
        i = int(hit[0])
        px, py = x(i), y(points.loc[i, "throughput_ips"])
        down = step["change"] < 0
        tip = py + 12 if down else py - 12
        base = tip - 8 if down else tip + 8
        view.steps.append({"path": f"M{px - 5},{base} L{px + 5},{base} L{px},{tip} Z",
                           "title": f"step {step['change']:+.1%} at {points.loc[i, 'label']}"})
    return view
