"""Figures for the reports, drawn with matplotlib and seaborn and returned as inline SVG text.

Every label passes through matplotlib as plain text (usetex off, mathtext disabled by escaping
'$'; matplotlib escapes it in the SVG), and the SVG is parsed and checked before it is inlined: no
script-like element and no event-handler or javascript: attribute can reach the page.
"""

from __future__ import annotations

import io
from typing import Any, Sequence


def _plain(label: str) -> str:
    """A label matplotlib draws literally (no mathtext)."""
    return str(label).replace("$", r"\$")


def _svg(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg"):]  # drop the XML prologue and doctype: inlined in HTML
    _check_inert(svg)
    return svg


def _check_inert(svg: str) -> None:
    """Labels are text nodes (escaped by matplotlib); no element or attribute may be active."""
    import xml.etree.ElementTree as ET

    for element in ET.fromstring(svg).iter():
        tag = element.tag.rsplit("}", 1)[-1].lower()
        if tag in ("script", "foreignobject", "iframe", "object", "embed"):
            raise ValueError(f"a figure's SVG holds a <{tag}> element")
        for name, value in element.attrib.items():
            local = name.rsplit("}", 1)[-1].lower()
            if local.startswith("on") or value.strip().lower().startswith("javascript:"):
                raise ValueError(f"a figure's SVG holds an active attribute {local}")


def _setup() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    plt.rcParams.update({"svg.fonttype": "none", "text.usetex": False, "figure.dpi": 100})
    sns.set_theme(style="whitegrid", context="notebook", font_scale=0.9)
    return plt, sns


def distributions(metric: str, values: dict[str, Sequence[float]], scale: float = 1.0) -> str:
    """Per-item values of one metric, one box with its points per system."""
    plt, sns = _setup()
    names = [n for n in values if len(values[n])]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(names) + 2), 3.2))
    data = {"system": [], "value": []}
    for name in names:
        data["system"] += [_plain(name)] * len(values[name])
        data["value"] += [scale * v for v in values[name]]
    sns.boxplot(data=data, x="system", y="value", ax=ax, color="#d9e6f2", fliersize=0, width=0.55)
    sns.stripplot(data=data, x="system", y="value", ax=ax, color="#1f4e79", size=3, alpha=0.6, jitter=0.2)
    ax.set_xlabel("")
    ax.set_ylabel(_plain(f"{metric} per item" + (" (%)" if scale == 100 else "")))
    ax.tick_params(axis="x", rotation=20)
    return _svg(fig)


def tradeoff(points: dict[str, dict[str, Any]], x_label: str, y_label: str) -> str:
    """One point per system: mean of y with its CI against x (e.g. WER against RTF)."""
    plt, sns = _setup()
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    palette = sns.color_palette("colorblind", len(points))
    for colour, (name, p) in zip(palette, points.items()):
        err = None
        if p.get("low") is not None and p.get("high") is not None:
            err = [[p["y"] - p["low"]], [p["high"] - p["y"]]]
        ax.errorbar([p["x"]], [p["y"]], yerr=err, fmt="o", color=colour, capsize=3, label=_plain(name))
    ax.set_xlabel(_plain(x_label))
    ax.set_ylabel(_plain(y_label))
    ax.legend(fontsize=8, frameon=False, loc="best")
    return _svg(fig)


def group_bars(metric: str, groups: dict[str, dict[str, dict[str, Any]]], scale: float = 1.0) -> str:
    """Mean with 95 % CI per group value (x) and system (hue)."""
    plt, sns = _setup()
    group_names = sorted({g for per in groups.values() for g in per})
    systems = list(groups)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(group_names) * max(1, len(systems)) / 2 + 2), 3.4))
    width = 0.8 / max(1, len(systems))
    palette = sns.color_palette("colorblind", len(systems))
    for k, (system, colour) in enumerate(zip(systems, palette)):
        xs, ys, lo, hi = [], [], [], []
        for j, group in enumerate(group_names):
            d = groups[system].get(group)
            if not d or d.get("mean") is None:
                continue
            xs.append(j - 0.4 + width * (k + 0.5))
            ys.append(scale * d["mean"])
            low = d.get("ci_low") if d.get("ci_low") is not None else d["mean"]
            high = d.get("ci_high") if d.get("ci_high") is not None else d["mean"]
            lo.append(scale * (d["mean"] - low))
            hi.append(scale * (high - d["mean"]))
        ax.bar(xs, ys, width=width, color=colour, label=_plain(system), yerr=[lo, hi], capsize=2)
    ax.set_xticks(range(len(group_names)))
    ax.set_xticklabels([_plain(g) for g in group_names], rotation=20, ha="right")
    ax.set_ylabel(_plain(metric + (" (%)" if scale == 100 else "")))
    ax.legend(fontsize=8, frameon=False)
    return _svg(fig)
