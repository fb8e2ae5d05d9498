"""A recorded run's plot, rebuilt from what the history stored (the History tab shows it as it was drawn)."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go


def figure_of(rec, result) -> go.Figure | None:
    """The run's main figure, by lab; None where the lab draws none."""
    lab, req, summary = rec.lab, rec.request, rec.summary
    if lab == "attention" and result:
        from ui.attention_plots import heatmap
        return heatmap(np.array(result["attention"]), result["tokens"],
                       f"Layer {summary.get('layer')}, head {summary.get('head')} — {rec.model}",
                       (result.get("window") or [0])[0])
    if lab == "attribution" and result:
        from core.attribution.types import AttributionResult
        from ui.attribution_plots import bar_figure, segment_labels
        res = AttributionResult.from_dict(result, req.get("method", "ig"), req.get("granularity", "token"),
                                          req.get("foil") or None)
        return bar_figure(res, segment_labels(res))
    if lab == "task-vector" and result:
        from core.mechanism.types import TaskVectorResult
        from ui.mechanism_plots import task_vector_figure
        return task_vector_figure(TaskVectorResult.from_dict(result))
    if lab == "function-vector" and result:
        from core.mechanism.types import FunctionVectorResult
        from ui.mechanism_plots import function_vector_figure
        return function_vector_figure(FunctionVectorResult.from_dict(result))
    if lab == "vector-series" and result:
        from core.mechanism.types import VectorPoint
        from ui.mechanism_plots import series_figure
        return series_figure([VectorPoint(**{**p, "top_heads": [tuple(h) for h in p["top_heads"]]})
                              for p in result])
    if lab == "emergence" and result:
        from core.emergence.types import PointResult
        from ui.emergence_plots import scores_figure
        return scores_figure([PointResult(**p) for p in result])
    if lab == "ablation-scan" and result:
        from core.interventions.types import AblationScan
        from ui.interventions_plots import scan_figure
        grid = result["grid"]
        return scan_figure(AblationScan(result["model"], result["task"], result["k"], result["ablation"],
                                        result["base"]["accuracy"], result["base"]["logp"],
                                        np.array([[c["accuracy"] for c in row] for row in grid]),
                                        np.array([[c["logp"] for c in row] for row in grid]), result["chance"]))
    if lab == "sweep":  # the run's own builder, from the stored curve: mean and std over seeds, chance
        from ui.fewshot_plots import curves_figure
        curve = summary.get("curve (value, seed, accuracy)") or {}
        points = {}
        for name, rows in curve.items():
            xs = sorted({p[0] for p in rows})
            values = {x: [p[2] for p in rows if p[0] == x and p[2] is not None] for x in xs}
            points[name] = [{"x": x, "mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v)}
                            for x, v in values.items() if v]
        return curves_figure({"accuracy": points}, summary.get("axis", "k"), summary.get("chance"))
    if lab in ("fewshot", "ablation"):
        rows = [(k, v) for k, v in summary.items() if isinstance(v, dict) and "accuracy" in v]
        if rows:
            fig = go.Figure(go.Bar(x=[k for k, _ in rows], y=[v["accuracy"] for _, v in rows]))
            return fig.update_layout(title="accuracy per configuration", yaxis=dict(range=[0, 1.02]), height=340)
    return None


def to_html(fig: go.Figure) -> str:
    """A self-contained page (plotly.js inside: it opens offline)."""
    return fig.to_html(include_plotlyjs=True, full_html=True)
