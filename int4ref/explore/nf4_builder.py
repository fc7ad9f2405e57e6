"""The NF4 builder: NF4 from normal quantiles (offset and positive/negative split), beside
bitsandbytes' table, and the error on N(0, 1)."""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from .. import codebooks, metrics
from ..formats import TableFormat, dequantize_groups, quantize_groups
from ..quant import dequantize, quantize
from . import viz
from .explorer import Control, Explorer, sample


def nf4_levels(offset: float = codebooks.NF4_OFFSET, n_positive: int = 8, float32_linspace: bool = True) -> np.ndarray:
    """16 levels built like NF4 with ``n_positive`` positive and ``15 - n_positive``
    negative normal quantiles plus an exact 0, scaled to [-1, 1] (sorted, float32).

    This is :func:`int4ref.codebooks.nf4_from_quantiles` with ``n_positive``; the default
    split (8 positive, 7 negative) is NF4's own.
    """
    if isinstance(n_positive, bool) or not isinstance(n_positive, (int, np.integer)) or not 1 <= n_positive <= 14:
        raise ValueError(
            f"n_positive must be an integer in 1..14 (15 - n_positive negative levels); got {n_positive!r}")
    return codebooks.nf4_from_quantiles(offset, float32_linspace=float32_linspace, n_positive=int(n_positive))


class NF4Builder(Explorer):
    """NF4 from normal quantiles: the offset and the split between positive and negative
    levels, the derived table beside bitsandbytes' :data:`int4ref.codebooks.NF4`, and the
    error of both on Gaussian data (group-wise absmax scaling)."""

    title = "NF4 builder"
    FIXED: ClassVar[dict] = {"n": 65536, "seed": 0, "group_size": 64}

    @classmethod
    def controls(cls):
        return (
            Control("offset", "quantile offset", "float", lo=0.90, hi=0.999, step=0.0001),
            Control("n_positive", "positive levels", "int", lo=1, hi=14, step=1),
            Control("float32_linspace", "float32 linspace (as torch)", "checkbox"),
        )

    @classmethod
    def _control_defaults(cls):
        return {"offset": codebooks.NF4_OFFSET, "n_positive": 8, "float32_linspace": True}

    def _compute(self, s):
        levels = nf4_levels(s["offset"], s["n_positive"], s["float32_linspace"])
        x = sample("gaussian", s["n"], s["seed"])
        g = s["group_size"]
        if x.size % g:
            raise ValueError(f"n={x.size} must be a multiple of group_size={g}")
        groups = x.reshape(-1, g)
        # a table format that is not registered in FORMATS: int4ref's group functions take it directly
        derived = TableFormat("nf4_derived", "NF4-style levels from the builder", levels)
        codes, scales, _ = quantize_groups(groups, derived)
        x_derived = dequantize_groups(codes, scales, None, derived).reshape(x.shape)
        x_nf4 = dequantize(quantize(x, "nf4", g))
        diff = (levels.astype(np.float64) - codebooks.NF4.astype(np.float64))
        return {
            "settings": s, "levels": levels, "nf4": codebooks.NF4.copy(), "diff": diff,
            "n_positive": s["n_positive"], "n_negative": 15 - s["n_positive"],
            "identical_to_nf4": bool(np.array_equal(levels, codebooks.NF4)),
            "max_abs_diff": float(np.abs(diff).max()),
            "rmse_derived": metrics.rmse(x, x_derived), "rmse_nf4": metrics.rmse(x, x_nf4),
            "sqnr_derived": metrics.sqnr_db(x, x_derived), "sqnr_nf4": metrics.sqnr_db(x, x_nf4),
            "codes_used": viz.level_usage(codes)["used"],
        }

    def numbers(self, r):
        return {
            "positive / negative levels": f"{r['n_positive']} / {r['n_negative']}",
            "identical to bitsandbytes NF4": r["identical_to_nf4"],
            "max |derived − NF4|": r["max_abs_diff"],
            "RMSE derived": r["rmse_derived"], "RMSE NF4": r["rmse_nf4"],
            "SQNR derived (dB)": r["sqnr_derived"], "SQNR NF4 (dB)": r["sqnr_nf4"],
        }

    def _draw(self, fig, axes, r):
        s = r["settings"]
        code = np.arange(16)
        ax = axes[0]
        ax.axhline(0, color=viz.OKABE_ITO["black"], linewidth=0.5)
        ax.plot(code, r["nf4"], linestyle="none", marker="D", markersize=7, color=viz.OKABE_ITO["vermillion"],
                label="bitsandbytes NF4")
        ax.plot(code, r["levels"], linestyle="none", marker="o", markersize=4, color=viz.OKABE_ITO["blue"],
                label=f"derived ({r['n_positive']}+/{r['n_negative']}−)")
        ax.set_xlim(-0.5, 15.5)
        ax.set_ylim(-1.12, 1.12)
        ax.set_xlabel("code (4-bit index)")
        ax.set_ylabel("level (fraction of group absmax)")
        ax.set_title(f"Levels, offset {s['offset']:.5f}", fontsize="medium")
        ax.legend(loc="upper left", fontsize="small", frameon=False)
        ax.int4ref_alt = (f"Scatter of the 16 levels by code: bitsandbytes NF4 as diamonds and the derived table "
                          f"({r['n_positive']} positive, {r['n_negative']} negative levels, offset {s['offset']:.5f}) "
                          f"as dots, from -1 to 1.")
        ax = axes[1]
        d = r["diff"]
        m = max(float(np.abs(d).max()), 1e-9) * 1.15
        ax.axhline(0, color=viz.OKABE_ITO["black"], linewidth=0.5)
        ax.vlines(code, 0, d, colors=viz.OKABE_ITO["blue"], linewidth=2)
        ax.plot(code, d, linestyle="none", marker="o", markersize=4, color=viz.OKABE_ITO["blue"])
        ax.set_xlim(-0.5, 15.5)
        ax.set_ylim(-m, m)
        ax.set_xlabel("code (4-bit index)")
        ax.set_ylabel("derived − NF4 (fraction of absmax)")
        ax.set_title(f"Difference, max {r['max_abs_diff']:.3g}", fontsize="medium")
        ax.int4ref_alt = (f"Stem plot of the derived level minus the NF4 level per code; the largest difference "
                          f"is {r['max_abs_diff']:.3g}.")
        fig.suptitle(f"Gaussian data, group size {s['group_size']}: RMSE derived {r['rmse_derived']:.4f} vs "
                     f"NF4 {r['rmse_nf4']:.4f} (SQNR {r['sqnr_derived']:.2f} vs {r['sqnr_nf4']:.2f} dB)")
        fig.int4ref_alt = " ".join(a.int4ref_alt for a in axes)
