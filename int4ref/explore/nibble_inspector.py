"""The nibble inspector: type values or flip bits; codes, bytes, both nibble layouts."""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from .. import metrics, packing
from .._checks import as_float_array
from ..quant import dequantize, quantize
from . import viz
from .explorer import Control, Explorer, format_options

DEFAULT_VALUES = ("0, 0.3, -0.27, -0.89, -0.45, -0.99, 0.06, 1.34, -0.49, -0.62, 0.49, 0.36, 0.11, -0.93, -0.03, 0.7, "
                  "-1.34, -0.46, -1.9, -1.29, -1.84, -0.24, -1.27, 0.27, 0.16, -0.19, -2.52, -0.54, -0.05, 0.11, "
                  "-1.53, -0.48")


def parse_values(text) -> tuple[np.ndarray, int]:
    """Up to 32 numbers (a string separated by commas/spaces, or a sequence) as float32,
    zero-padded to 32 (one GGML block). Returns ``(values, how many were given)``."""
    if isinstance(text, str):
        parts = [p for p in text.replace(",", " ").replace(";", " ").split() if p]
        try:
            vals = [float(p) for p in parts]
        except ValueError:
            bad = next(p for p in parts if not _is_float(p))
            raise ValueError(f"not a number: {bad!r} (type up to 32 numbers separated by commas)") from None
    else:
        vals = list(np.asarray(text, dtype=np.float64).ravel())
    if not 1 <= len(vals) <= 32:
        raise ValueError(f"type 1 to 32 values (one block); got {len(vals)}")
    x = np.zeros(32, dtype=np.float32)
    x[: len(vals)] = as_float_array(np.asarray(vals, dtype=np.float64), "values").astype(np.float32)
    return x, len(vals)


def _is_float(p) -> bool:
    try:
        float(p)
        return True
    except ValueError:
        return False


class NibbleInspector(Explorer):
    """Type up to 32 values (one block) or flip bits of the codes: see the codes, the
    dequantized values and the bytes in the bitsandbytes and GGML layouts.

    ``overrides``: ``((element, code), ...)`` replacing quantized codes (what clicking bits
    does). The live widget shows the bytes as an HTML table (:meth:`render_html`), which
    updates instantly; :meth:`render` draws the same as a matplotlib figure.
    """

    title = "Nibble inspector"
    NCOLS = 2
    FIGSIZE = (9.2, 6.4)
    FIXED: ClassVar[dict] = {"overrides": ()}

    @classmethod
    def controls(cls):
        return (
            Control("values", "values", "text"),
            Control("format", "format", "dropdown", format_options()),
            Control("element", "element", "int", lo=0, hi=31, step=1),
        )

    @classmethod
    def _control_defaults(cls):
        return {"values": DEFAULT_VALUES, "format": "int4_sym", "element": 0}

    @classmethod
    def validate(cls, settings, base=None):
        out = super().validate(settings, base)
        ov = []
        for item in out["overrides"] or ():
            try:
                i, c = (int(v) for v in item)
            except (TypeError, ValueError):
                raise ValueError(f"overrides are (element, code) pairs; got {item!r}") from None
            if not (0 <= i < 32 and 0 <= c < 16):
                raise ValueError(f"override {item!r}: element must be in 0..31 and code in 0..15")
            ov.append((i, c))
        out["overrides"] = tuple(sorted(dict(ov).items()))
        return out

    def _compute(self, s):
        x, n_given = parse_values(s["values"])
        qt = quantize(x, s["format"], group_size=32)
        codes = qt.codes.copy()
        for i, c in s["overrides"]:
            codes[i] = c
        qt_shown = dataclasses.replace(qt, codes=codes)
        x_hat = dequantize(qt_shown)
        packed = {lay: packing.pack_nibbles(codes, lay) for lay in ("bnb", "ggml")}
        roundtrip = all(np.array_equal(packing.unpack_nibbles(p, 32, lay), codes) for lay, p in packed.items())
        maps = {lay: viz.nibble_map(lay, 32) for lay in packed}
        return {
            "settings": s, "x": x, "n_given": n_given, "quantized_codes": qt.codes, "codes": codes, "x_hat": x_hat,
            "scale": float(qt.scale_values()[0]), "zero": None if qt.zeros is None else int(qt.zeros[0]),
            "bytes_bnb": packed["bnb"], "bytes_ggml": packed["ggml"], "maps": maps, "roundtrip_ok": roundtrip,
            "rmse": metrics.rmse(x[:n_given], x_hat[:n_given]),
            "hex_bnb": packed["bnb"].tobytes().hex(" "), "hex_ggml": packed["ggml"].tobytes().hex(" "),
            "n_flipped": int((codes != qt.codes).sum()),
        }

    def numbers(self, r):
        out = {"values typed": r["n_given"], "scale": r["scale"]}
        if r["zero"] is not None:
            out["zero-point"] = r["zero"]
        out.update({"codes changed by hand": r["n_flipped"], "RMSE of the typed values": r["rmse"],
                    "bitsandbytes bytes": r["hex_bnb"], "GGML bytes": r["hex_ggml"],
                    "unpack(pack(codes)) == codes": r["roundtrip_ok"]})
        return out

    def _draw(self, fig, axes, r):
        viz.bit_layout(r["codes"], axes=axes, title=f"{r['settings']['format']}: 32 codes, "
                       f"scale {r['scale']:.4g}, in both nibble layouts")

    def render_html(self, r=None) -> str:
        """Both layouts as HTML tables (byte, hex, high and low nibble with element and bits),
        then a table of element, value, code and dequantized value."""
        if r is None:
            r = self.compute(**self.settings)
        sel = r["settings"]["element"]
        colors = {(0, 0): ("#0072B2", "white"), (0, 1): ("#8CC4E8", "black"),
                  (1, 0): ("#D55E00", "white"), (1, 1): ("#F2B58C", "black")}

        def cell(i):
            bg, fg = colors[(i // 16, i % 2)]
            border = "3px solid #000" if i == sel else "1px solid #fff"
            return (f"<td style='background:{bg};color:{fg};border:{border};padding:1px 6px;font-family:monospace'>"
                    f"x[{i}] {r['codes'][i]:04b}</td>")

        tables = []
        for lay, title in (("bnb", "bitsandbytes"), ("ggml", "GGML block")):
            byte, high = r["maps"][lay]
            packed = r[f"bytes_{lay}"]
            rows = []
            for k, b in enumerate(packed):
                hi_el = int(np.flatnonzero((byte == k) & high)[0])
                lo_el = int(np.flatnonzero((byte == k) & ~high)[0])
                rows.append(f"<tr><td style='font-family:monospace;padding-right:6px'>{k:2d}: 0x{b:02X}</td>"
                            f"{cell(hi_el)}{cell(lo_el)}</tr>")
            tables.append(f"<table style='border-collapse:collapse;margin-right:2em'><caption>{title}</caption>"
                          f"<tr><th>byte</th><th>bits 7–4</th><th>bits 3–0</th></tr>{''.join(rows)}</table>")
        bold = " style='font-weight:bold'"
        vals = "".join(
            f"<tr{bold if i == sel else ''}><td>{i}</td><td>{r['x'][i]:.4g}</td>"
            f"<td style='font-family:monospace'>{r['codes'][i]:2d} = {r['codes'][i]:04b}</td>"
            f"<td>{r['x_hat'][i]:.4g}</td></tr>"
            for i in range(32)
        )
        values = (f"<table style='border-collapse:collapse'><caption>values</caption><tr><th>x</th><th>value</th>"
                  f"<th>code</th><th>dequantized</th></tr>{vals}</table>")
        return f"<div style='display:flex;align-items:flex-start'>{''.join(tables)}{values}</div>"

    # widget: the inspector's live view is the HTML above, plus bit toggles for one element
    def _extra_widgets(self):
        import ipywidgets as w

        self.html_view = w.HTML()
        self.bit_buttons = [w.ToggleButton(description=f"bit {b}", layout=w.Layout(width="5em")) for b in (3, 2, 1, 0)]
        for btn, b in zip(self.bit_buttons, (3, 2, 1, 0)):
            btn.int4ref_bit = b
            btn.observe(self._on_bit, names="value")
        self.reset_button = w.Button(description="reset flipped bits")
        self.reset_button.on_click(lambda _: self._set_overrides(()))

    def picture(self):
        return None if self.box is None else self.html_view.value

    def _views(self):
        import ipywidgets as w

        return [w.HBox([w.HTML("code bits of the selected element:"), *self.bit_buttons, self.reset_button]),
                self.html_view]

    def _adjust(self, settings, changed):
        if changed in ("values", "format"):
            settings["overrides"] = ()  # new codes: hand-flipped bits no longer apply
        return settings

    def _sync_extra(self):
        if self.result is None or not getattr(self, "bit_buttons", None):
            return
        code = int(self.result["codes"][self.settings["element"]])
        for btn in self.bit_buttons:
            btn.value = bool(code >> btn.int4ref_bit & 1)

    def _on_bit(self, change):
        if self._syncing or self.result is None:
            return
        i = self.settings["element"]
        code = int(self.result["codes"][i]) ^ (1 << change["owner"].int4ref_bit)
        ov = dict(self.settings["overrides"])
        if code == int(self.result["quantized_codes"][i]):
            ov.pop(i, None)
        else:
            ov[i] = code
        self._set_overrides(tuple(ov.items()))

    def _set_overrides(self, overrides):
        self.settings = self.validate({"overrides": overrides}, base=self.settings)
        self.update()

    def flip_bit(self, element: int, bit: int):
        """Flip one bit of one element's code, as clicking its toggle does."""
        if not (0 <= bit <= 3):
            raise ValueError(f"bit must be in 0..3, got {bit}")
        if self.box is not None:
            self.widgets["element"].value = element
            btn = next(b for b in self.bit_buttons if b.int4ref_bit == bit)
            btn.value = not btn.value
            return self.result
        self.settings = self.validate({"element": element}, base=self.settings)
        r = self.result or self.compute(**self.settings)
        code = int(r["codes"][element]) ^ (1 << bit)
        self._set_overrides(tuple({**dict(self.settings["overrides"]), element: code}.items()))
        return self.result

    def _redraw(self, result):
        if self.box is None and self.image is None:  # no widget: keep a figure for render()
            self.figure = self.render(result)
            return
        self.html_view.value = self.render_html(result)
        self._syncing = True
        try:
            self._sync_extra()
        finally:
            self._syncing = False
