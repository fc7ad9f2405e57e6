"""The format explorer: data x format x group size x outlier; the histogram with the
format's levels, the error histogram, RMSE / SQNR / bits per weight."""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from .. import metrics
from ..model import data
from ..quant import dequantize, quantize
from . import viz
from .explorer import DATA_KINDS, DEFAULT_LAYER, Control, Explorer, format_options, sample, with_outlier


class FormatExplorer(Explorer):
    """A format on a data set: the histogram with the format's levels, the error histogram
    and the numbers (RMSE, SQNR, max error, bits per weight, codes used).

    ``outlier`` (in standard deviations of the data) replaces the first value, so group 0
    holds it; its levels are drawn dashed and ``rmse_outlier_group`` is the RMSE of the
    other values of that group.
    """

    title = "Format explorer"
    FIXED: ClassVar[dict] = {"n": 65536, "seed": 0}

    @classmethod
    def controls(cls):
        kinds = [(label, k) for k, label in DATA_KINDS.items() if k != "minilm" or data.minilm_available()]
        return (
            Control("data", "data", "dropdown", tuple(kinds)),
            Control("format", "format", "dropdown", format_options()),
            Control("group_size", "group size", "selection", (16, 32, 64, 128, 256, 1024)),
            Control("outlier", "outlier (σ)", "float", lo=0.0, hi=100.0, step=1.0),
            Control("scale_dtype", "scales", "dropdown", ("float32", "float16")),
            Control("layer", "MiniLM layer", "dropdown", data.MINILM_LINEAR_NAMES),
        )

    @classmethod
    def _control_defaults(cls):
        return {"data": "gaussian", "format": "nf4", "group_size": 64, "outlier": 0.0, "scale_dtype": "float32",
                "layer": DEFAULT_LAYER}

    @classmethod
    def validate(cls, settings, base=None):
        if settings.get("data") == "minilm":
            data.find_minilm_safetensors()  # FileNotFoundError with the install command
        return super().validate(settings, base)

    def _compute(self, s):
        clean = sample(s["data"], s["n"], s["seed"], s["layer"])
        x, outlier_value = with_outlier(clean, s["outlier"])
        qt = quantize(x, s["format"], s["group_size"], scale_dtype=np.dtype(s["scale_dtype"]))
        x_hat = dequantize(qt)
        usage = viz.level_usage(qt)
        g = qt.group_size
        first = slice(1, min(g, x.size))  # group 0 without its first value (the outlier's slot)
        return {
            "settings": s, "x": x, "x_hat": x_hat, "qt": qt,
            "value_range": (float(clean.min()), float(clean.max())),
            "rmse": metrics.rmse(x, x_hat),
            "sqnr_db": metrics.sqnr_db(x, x_hat),
            "max_abs_error": metrics.max_abs_error(x, x_hat),
            "bits_per_weight": qt.bits_per_weight(),
            "n_values": int(x.size), "n_groups": qt.n_groups,
            "codes_used": usage["used"], "entropy_bits": usage["entropy_bits"],
            "outlier_value": outlier_value,
            "rmse_outlier_group": metrics.rmse(x.ravel()[first], x_hat.ravel()[first]) if x.size > 1 else 0.0,
        }

    def numbers(self, r):
        return {
            "values": r["n_values"], "groups": r["n_groups"], "RMSE": r["rmse"], "SQNR (dB)": r["sqnr_db"],
            "max |error|": r["max_abs_error"], "bits / weight": r["bits_per_weight"],
            "codes used (of 16)": r["codes_used"], "code entropy (bits)": r["entropy_bits"],
            "outlier value": r["outlier_value"], "RMSE, rest of group 0": r["rmse_outlier_group"],
        }

    def _draw(self, fig, axes, r):
        s = r["settings"]
        extra = (0,) if s["outlier"] > 0 else ()
        lo, hi = r["value_range"]
        note = f",\nholds the outlier {r['outlier_value']:.3g}" + (" (off scale)" if not lo <= r["outlier_value"] <= hi
                                                                   else "")
        viz.weight_histogram(r["x"], qt=r["qt"], group="median", extra_groups=extra, value_range=r["value_range"],
                             extra_note=note,
                             ax=axes[0], title=f"{DATA_KINDS[s['data']]}: weights and levels", title_size="medium")
        viz.error_histogram(r["x"], r["x_hat"], ax=axes[1], title_size="medium",
                            title=f"Error: RMSE {r['rmse']:.3g}, SQNR {r['sqnr_db']:.2f} dB")
        fig.suptitle(f"{s['format']}, group size {r['qt'].group_size}, {s['scale_dtype']} scales: "
                     f"{r['bits_per_weight']:.3f} bits per weight, {r['codes_used']}/16 codes used")
