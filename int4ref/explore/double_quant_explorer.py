"""The double-quantization explorer: block sizes and bits of both levels, bits saved
against error added."""
from __future__ import annotations

from typing import ClassVar

import numpy as np
from matplotlib.ticker import FuncFormatter, NullLocator

from .. import metrics
from ..quant import bits_per_weight_formula, dequantize, double_quantize, quantize
from . import viz
from .explorer import Control, Explorer, format_options, sample


class DoubleQuantExplorer(Explorer):
    """Double quantization: group size of the 4-bit codes (first level), block size, bits
    and table of the second level that compresses the scales. Shows the bits per weight
    saved against the error added, next to float32 and float16 scales and a sweep over
    the second level's bits."""

    title = "Double-quantization explorer"
    FIXED: ClassVar[dict] = {"n": 1 << 16, "seed": 0, "data": "gaussian"}
    #: the second-level settings of the sweep drawn beside the current one
    SWEEP = ((2, "uniform"), (3, "uniform"), (4, "uniform"), (6, "uniform"), (8, "uniform"), (8, "dynamic"))

    @classmethod
    def controls(cls):
        return (
            Control("format", "format", "dropdown", format_options()),
            Control("group_size", "group size (level 1)", "selection", (16, 32, 64, 128, 256)),
            Control("dq_blocksize", "block size (level 2)", "selection", (16, 32, 64, 128, 256, 512, 1024, 4096)),
            Control("dq_table", "level-2 table", "dropdown", ("dynamic", "uniform")),
            Control("dq_bits", "level-2 bits", "int", lo=2, hi=8, step=1),
        )

    @classmethod
    def _control_defaults(cls):
        return {"format": "nf4", "group_size": 64, "dq_blocksize": 256, "dq_table": "dynamic", "dq_bits": 8}

    def _adjust(self, settings, changed):
        if changed == "dq_table" and settings["dq_table"] == "dynamic":
            settings["dq_bits"] = 8  # the dynamic map exists only with 8 bits
        elif changed == "dq_bits" and settings["dq_bits"] != 8:
            settings["dq_table"] = "uniform"
        return settings

    def _sync_extra(self):
        if "dq_bits" in self.widgets:
            self.widgets["dq_bits"].disabled = self.settings["dq_table"] == "dynamic"

    def _extra_widgets(self):
        self._sync_extra()

    def _compute(self, s):
        x = sample(s["data"], s["n"], s["seed"])
        g, block = s["group_size"], s["dq_blocksize"]
        qt = quantize(x, s["format"], g)
        x32 = dequantize(qt)
        qt16 = quantize(x, s["format"], g, scale_dtype=np.float16)
        x16 = dequantize(qt16)
        qdq = double_quantize(qt, bits=s["dq_bits"], blocksize=block, table=s["dq_table"])
        xdq = dequantize(qdq)
        scales, decoded = qt.scale_values(), qdq.scale_values()
        nz = scales != 0
        sweep = []
        for bits, table in sorted({*self.SWEEP, (s["dq_bits"], s["dq_table"])}):
            if (bits, table) == (s["dq_bits"], s["dq_table"]):
                q, xr = qdq, xdq
            else:
                q = double_quantize(qt, bits=bits, blocksize=block, table=table)
                xr = dequantize(q)
            sweep.append({"bits": bits, "table": table, "bits_per_weight": q.bits_per_weight(),
                          "rmse": metrics.rmse(x, xr)})
        rmse32, rmsedq = metrics.rmse(x, x32), metrics.rmse(x, xdq)
        return {
            "settings": s, "scales": scales, "decoded_scales": decoded,
            "scale_rel_error_pct": 100 * (decoded[nz] - scales[nz]) / scales[nz],
            "scale_relative_error": metrics.relative_error(scales, decoded),
            "bpw_fp32": qt.bits_per_weight(), "bpw_fp16": qt16.bits_per_weight(), "bpw_dq": qdq.bits_per_weight(),
            "bpw_dq_formula": bits_per_weight_formula(g, zero_bits=4 if qt.zeros is not None else 0,
                                                      double_quant=(s["dq_bits"], block)),
            "rmse_fp32": rmse32, "rmse_fp16": metrics.rmse(x, x16), "rmse_dq": rmsedq,
            "bits_saved": qt.bits_per_weight() - qdq.bits_per_weight(),
            "bits_saved_vs_fp16": qt16.bits_per_weight() - qdq.bits_per_weight(),
            "rmse_added": rmsedq - rmse32, "rmse_added_pct": 100 * (rmsedq - rmse32) / rmse32,
            "n_scales": int(scales.size), "n_blocks": int(qdq.scale_state.absmax.size), "sweep": sweep,
        }

    def numbers(self, r):
        return {
            "scales (blocks)": f"{r['n_scales']:,} ({r['n_blocks']:,})",
            "bits/weight, float32 scales": r["bpw_fp32"], "bits/weight, float16 scales": r["bpw_fp16"],
            "bits/weight, double-quantized": r["bpw_dq"], "bits saved vs float32": r["bits_saved"],
            "RMSE, float32 scales": r["rmse_fp32"], "RMSE, double-quantized": r["rmse_dq"],
            "RMSE added (%)": r["rmse_added_pct"], "scale relative error": r["scale_relative_error"],
        }

    def _draw(self, fig, axes, r):
        s = r["settings"]
        ax = axes[0]
        e = r["scale_rel_error_pct"]
        m = max(float(np.abs(e).max()), 1e-6) * 1.05
        counts, edges = np.histogram(e, bins=61, range=(-m, m))
        viz.stairs(ax, counts, edges, color=viz.OKABE_ITO["blue"], alpha=0.7)
        ax.set_xlim(-m, m)
        ax.set_ylim(0, max(1, counts.max()) * 1.08)
        ax.set_xlabel("decoded scale − scale (% of the scale)")
        ax.set_ylabel("count (scales per bin)")
        ax.set_title(f"Scale error: {s['dq_bits']}-bit {s['dq_table']}, blocks of {s['dq_blocksize']}",
                     fontsize="medium")
        ax.int4ref_alt = (f"Histogram of the relative error of {e.size} double-quantized scales, "
                          f"within ±{m:.3g} percent.")
        ax = axes[1]
        base = r["rmse_fp32"]
        floor = 1e-5  # percent; a log axis cannot show 0 (float32 scales are the baseline)

        def added(rmse):
            return max(100 * (rmse - base) / base, floor)

        uni = [row for row in r["sweep"] if row["table"] == "uniform"]
        dyn = [row for row in r["sweep"] if row["table"] == "dynamic"]
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # no mathtext: 3x faster to draw
        ax.yaxis.set_minor_locator(NullLocator())  # dozens of minor ticks cost a third of the drawing
        ax.plot([u["bits_per_weight"] for u in uni], [added(u["rmse"]) for u in uni], color=viz.OKABE_ITO["blue"],
                marker="o", markersize=4, label="uniform level 2 (2, 3, 4, 6, 8 bits)")
        ax.plot([d["bits_per_weight"] for d in dyn], [added(d["rmse"]) for d in dyn],
                color=viz.OKABE_ITO["vermillion"], marker="D", linestyle="none", label="dynamic 8-bit (QLoRA)")
        ax.plot([r["bpw_fp16"]], [added(r["rmse_fp16"])], marker="^", linestyle="none",
                color=viz.OKABE_ITO["orange"], label="float16 scales, no level 2")
        ax.plot([r["bpw_dq"]], [added(r["rmse_dq"])], marker="o", markersize=13, markerfacecolor="none",
                linestyle="none", markeredgewidth=1.5, color=viz.OKABE_ITO["bluish_green"], label="current setting")
        xs = [row["bits_per_weight"] for row in r["sweep"]] + [r["bpw_fp16"]]
        ys = [added(row["rmse"]) for row in r["sweep"]] + [added(r["rmse_fp16"])]
        dx = (max(xs) - min(xs)) or 0.01
        ax.set_xlim(min(xs) - 0.08 * dx, max(xs) + 0.08 * dx)
        ax.set_ylim(min(ys) / 3, max(ys) * 30)
        ax.set_xlabel(f"bits per weight (bits; float32 scales: {r['bpw_fp32']:.3f})")
        ax.set_ylabel("RMSE added vs float32 scales (%)")
        ax.set_title("Bits against error", fontsize="medium")
        ax.legend(loc="upper right", fontsize="x-small", frameon=False)
        ax.int4ref_alt = (f"Plot, log scale, of the RMSE added by compressing the scales (percent of the RMSE with "
                          f"float32 scales) against bits per weight, for a uniform second level of 2 to 8 bits, the "
                          f"8-bit dynamic map and float16 scales; the current setting is {r['bpw_dq']:.4f} bits "
                          f"per weight with {r['rmse_added_pct']:.3g} % more RMSE.")
        fig.suptitle(f"{s['format']}, group size {s['group_size']}: double quantization saves "
                     f"{r['bits_saved']:.4f} bits/weight, adds {r['rmse_added_pct']:.3f} % RMSE")
        fig.int4ref_alt = " ".join(a.int4ref_alt for a in axes)
