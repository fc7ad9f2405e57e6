"""The "will it fit?" calculator as a picture, a live widget and a kernel-free page.

* :func:`footprint_bars`: stacked bars (weights, KV cache, activations, in GiB) of one or
  more :class:`~int4ref.footprint.Footprint` against the memory of the GPUs in
  :data:`~int4ref.footprint.GPUS`; alt text from the same numbers.
* :class:`FitExplorer`: an :class:`~int4ref.explore.Explorer` with model, weight format,
  context, KV-cache dtype and batch controls (``FitExplorer().widget()`` in a notebook).
* :class:`StaticFitCalculator`: the same five controls as an HTML page fragment that
  needs no kernel. Every number is computed here, in Python, and embedded: for each model
  and format the weights, for each model, KV dtype, context and batch the KV cache and the
  activations. The page's script only adds the three parts of the chosen setting and
  picks the smallest GPU that holds the sum.

All numbers come from :mod:`int4ref.footprint`.
"""
from __future__ import annotations

import html
import json

from matplotlib.figure import Figure

from .. import footprint as fp
from .explorer import Control, Explorer

__all__ = ["CONTEXTS", "BATCHES", "PART_COLORS", "footprint_bars", "FitExplorer", "StaticFitCalculator"]

#: the context lengths the controls offer (tokens per sequence)
CONTEXTS = (0, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)
#: the batch sizes the controls offer (sequences)
BATCHES = (1, 2, 4, 8, 16, 32, 64)
PART_COLORS = {"weights": "#0072B2", "KV cache": "#E69F00", "activations": "#009E73"}  # Okabe-Ito
_HATCHES = {"weights": "", "KV cache": "//", "activations": ".."}
_PARTS = ("weights", "KV cache", "activations")


def footprint_bars(footprints, ax=None, labels=None, title=None):
    """Horizontal stacked bars of ``footprints`` (a list of Footprint) in GiB, one per
    row (the first on top), with a dotted vertical line at the memory of each GPU up to
    the first one that holds the largest total. Returns the figure; its alt text
    (``fig.int4ref_alt``) lists each bar's parts, total and smallest GPU."""
    footprints = list(footprints)
    if not footprints:
        raise ValueError("footprint_bars needs at least one Footprint")
    labels = [f.model for f in footprints] if labels is None else list(labels)
    if len(labels) != len(footprints):
        raise ValueError(f"{len(labels)} labels for {len(footprints)} footprints")
    if ax is None:
        fig = Figure(figsize=(7.5, 0.9 + 0.55 * len(footprints)), layout="constrained")
        ax = fig.subplots()
    fig = ax.figure
    y = list(range(len(footprints)))[::-1]
    left = [0.0] * len(footprints)
    bars = []
    for part in _PARTS:
        widths = [f.gib()[part] for f in footprints]
        bars.append(ax.barh(y, widths, left=left, color=PART_COLORS[part], hatch=_HATCHES[part], label=part,
                            edgecolor="white", linewidth=0.5))
        left = [a + b for a, b in zip(left, widths)]
    largest = max(f.total for f in footprints)
    holder = fp.smallest_gpu(largest)
    shown = [g for g in fp.GPUS if holder is None or g.memory_bytes <= holder.memory_bytes]
    for g in shown:
        ax.axvline(g.memory_gb, color="0.35", linestyle=":", linewidth=1)
    for child in list(ax.child_axes):   # a redraw into the same axes replaces the GPU axis
        if getattr(child, "int4ref_gpu_axis", False):
            child.remove()
    top = ax.secondary_xaxis("top")
    top.int4ref_gpu_axis = True
    top.set_xticks([g.memory_gb for g in shown],
                   [f"{g.name.removeprefix('GeForce ')} {g.memory_gb}" for g in shown], fontsize=7, rotation=30,
                   ha="left", rotation_mode="anchor")
    for yi, total in zip(y, left):
        ax.text(total, yi, f" {total:.1f}", va="center", fontsize=8)
    ax.set_yticks(y, labels, fontsize=8)
    xmax = max(max(left), shown[-1].memory_gb if shown else 0) * 1.12
    ax.set_xlim(0, xmax)
    ax.set_ylim(-0.6, len(footprints) - 0.4)
    ax.set_xlabel("memory (GiB, 2³⁰ bytes)")
    ax.legend(handles=bars, loc="lower right", fontsize=7, frameon=False)  # this drawing's bars only
    if title:
        ax.set_title(title, fontsize="medium", pad=40)
    rows = []
    for label, f in zip(labels, footprints):
        g = f.gib()
        gpu = f.gpu.name if f.gpu else "no single GPU of the list"
        rows.append(f"{label or f.model}: weights {g['weights']:.1f}, KV cache {g['KV cache']:.1f}, activations "
                    f"{g['activations']:.1f}, total {g['total']:.1f} GiB, smallest GPU {gpu}")
    alt = (f"Horizontal stacked bars of weights, KV cache and activations in GiB, against dotted lines at the "
           f"memory of {', '.join(f'{g.name} ({g.memory_gb} GiB)' for g in shown)}. " + "; ".join(rows) + ".")
    ax.int4ref_alt = alt
    fig.int4ref_alt = alt
    return fig


def _largest_context(arch: fp.Architecture) -> int:
    return max(c for c in CONTEXTS if c <= arch.context)


class FitExplorer(Explorer):
    """Will it fit? Model x weight format x context x KV-cache dtype x batch: the memory
    by part and the smallest GPU that holds it. In the widget, a context longer than the
    model allows (after a change of model or of context) snaps back to the longest it
    allows; :meth:`compute` raises for it."""

    title = "Will it fit?"
    NCOLS = 1
    FIGSIZE = (8.0, 2.9)

    @classmethod
    def controls(cls):
        return (
            Control("model", "model", "dropdown", tuple(fp.MODELS)),
            Control("format", "weight format", "dropdown", tuple(fp.WEIGHT_FORMATS)),
            Control("context", "context (tokens)", "selection", CONTEXTS),
            Control("kv_dtype", "KV cache", "dropdown", tuple(fp.KV_DTYPES)),
            Control("batch", "batch", "selection", BATCHES),
        )

    @classmethod
    def _control_defaults(cls):
        return {"model": "Llama-3-8B", "format": "INT4 g128 (GPTQ/AWQ)", "context": 8192, "kv_dtype": "fp16",
                "batch": 1}

    def _adjust(self, settings, changed):
        # the context slider snaps back to the longest context the model allows
        settings["context"] = min(settings["context"], _largest_context(fp.MODELS[settings["model"]]))
        return settings

    def _compute(self, s):
        f = fp.footprint(s["model"], s["format"], context=s["context"], kv_dtype=s["kv_dtype"], batch=s["batch"])
        return {"settings": s, "footprint": f, "gib": f.gib(), "bytes": f.parts(), "gpu": f.gpu}

    def numbers(self, r):
        g = r["gib"]
        return {"weights (GiB)": g["weights"], "KV cache (GiB)": g["KV cache"],
                "activations (GiB)": g["activations"], "total (GiB)": g["total"],
                "total (bytes)": round(r["bytes"]["total"]),
                "smallest GPU": r["gpu"].name if r["gpu"] else "none of the list"}

    def _draw(self, fig, axes, r):
        s, f = r["settings"], r["footprint"]
        gpu = f.gpu.name if f.gpu else "no single GPU of the list"
        footprint_bars([f], ax=axes[0], labels=[""],
                       title=f"{s['model']}, {s['format']}, {s['context']:,} tokens x {s['batch']}, "
                             f"{s['kv_dtype']} KV cache:\n{r['gib']['total']:.1f} GiB, fits on: {gpu}")
        fig.int4ref_alt = axes[0].int4ref_alt


class StaticFitCalculator:
    """The calculator for a page without a kernel: five ``<select>`` controls, the parts
    and the total in GiB, a bar, and the smallest GPU. ``tables()`` holds every number the
    page can show; the script adds the three parts and compares the sum with the GPUs.
    ``models``, ``formats``, ``kv_dtypes``, ``contexts``, ``batches``: the options (default:
    all that :mod:`int4ref.footprint` and this module list)."""

    _count = 0

    def __init__(self, models=None, formats=None, kv_dtypes=None, contexts=CONTEXTS, batches=BATCHES,
                 default=None):
        self.models = list(fp.MODELS if models is None else models)
        self.formats = list(fp.WEIGHT_FORMATS if formats is None else formats)
        self.kv_dtypes = list(fp.KV_DTYPES if kv_dtypes is None else kv_dtypes)
        self.contexts = list(contexts)
        self.batches = list(batches)
        for name, options in [("models", self.models), ("formats", self.formats), ("kv_dtypes", self.kv_dtypes),
                              ("contexts", self.contexts), ("batches", self.batches)]:
            if not options:
                raise ValueError(f"{name} must not be empty")
        for m in self.models:
            fp.get_model(m)
        for f in self.formats:
            fp.resolve_format(f)
        self.default = {**FitExplorer.defaults(), **(default or {})}

    def tables(self) -> dict:
        """Bytes by part, ``weights[m][f]``, ``kv[m][k][c][b]`` and ``act[m][c][b]`` (indices
        into the option lists; ``None`` where the context is longer than the model allows),
        and the GPUs as ``[name, bytes]``, smallest first."""
        def per_context(m, fn):
            arch = fp.get_model(m)
            return [[fn(arch, c, b) if c <= arch.context else None for b in self.batches] for c in self.contexts]

        return {
            "models": self.models, "formats": self.formats, "kv_dtypes": self.kv_dtypes,
            "contexts": self.contexts, "batches": self.batches,
            "weights": [[fp.footprint(m, f, context=0).weights for f in self.formats] for m in self.models],
            "kv": [[per_context(m, lambda a, c, b, k=k: fp.kv_cache_bytes(a, c, b, k)) for k in self.kv_dtypes]
                   for m in self.models],
            "act": [per_context(m, fp.activation_bytes) for m in self.models],
            "gpus": [[g.name, g.memory_bytes] for g in sorted(fp.GPUS, key=lambda g: g.memory_bytes)],
            "GiB": fp.GiB,
        }

    # The script: fit(t, i) returns the parts, the total and the GPU for option indices
    # i = {m, f, c, k, b}; the rest draws. tests/test_footprint.py runs fit() in node.
    SCRIPT = """
function int4refFit(t, i) {
  var kv = t.kv[i.m][i.k][i.c][i.b], act = t.act[i.m][i.c][i.b], w = t.weights[i.m][i.f];
  if (kv === null || act === null) { return null; }
  var total = w + kv + act, gpu = null;
  for (var j = 0; j < t.gpus.length; j++) { if (total <= t.gpus[j][1]) { gpu = t.gpus[j][0]; break; } }
  return {weights: w, kv: kv, act: act, total: total, gpu: gpu};
}
"""

    def _repr_html_(self) -> str:
        StaticFitCalculator._count += 1
        uid = f"int4ref-fit-{StaticFitCalculator._count}-{id(self):x}"
        t = self.tables()

        def select(key, options, labels, default):
            opts = "".join(f'<option value="{j}"{" selected" if o == default else ""}>{html.escape(str(lab))}'
                           f"</option>" for j, (o, lab) in enumerate(zip(options, labels)))
            return f'<label style="margin-right:1em">{key} <select data-key="{key[0]}">{opts}</select></label>'

        d = self.default
        controls = "".join([
            select("model", self.models, self.models, d["model"]),
            select("format", self.formats, self.formats, d["format"]),
            select("context (tokens)", self.contexts, [f"{c:,}" for c in self.contexts], d["context"]),
            select("KV cache", self.kv_dtypes, self.kv_dtypes, d["kv_dtype"]),
            select("batch", self.batches, self.batches, d["batch"]),
        ])
        # data-key letters: m(odel), f(ormat), c(ontext), K(V cache) -> k, b(atch)
        colors = json.dumps([PART_COLORS[p] for p in _PARTS])
        return (
            f'<div id="{uid}" style="font-size:90%">{controls}'
            f'<div class="bar" style="display:flex;height:1.4em;margin:0.6em 0;background:#eee"></div>'
            f'<div class="out"></div>'
            f"<script>(function() {{{self.SCRIPT}"
            f"var t = {json.dumps(t)}, colors = {colors}, names = ['weights', 'KV cache', 'activations'];"
            f"var root = document.getElementById({json.dumps(uid)});"
            "var sel = root.querySelectorAll('select');"
            "function gib(x) { return (x / t.GiB).toFixed(2) + ' GiB'; }"
            "function show() {"
            "  var i = {};"
            "  sel.forEach(function(s) { i[s.dataset.key.toLowerCase()] = +s.value; });"
            "  var r = int4refFit(t, i), out = root.querySelector('.out'), bar = root.querySelector('.bar');"
            "  if (r === null) { out.textContent = 'This context is longer than ' + t.models[i.m] + ' allows.';"
            "    bar.innerHTML = ''; return; }"
            "  var scale = Math.max(r.total, r.gpu ? t.gpus.find(function(g) { return g[0] === r.gpu; })[1] : r.total);"
            "  var parts = [r.weights, r.kv, r.act];"
            "  bar.innerHTML = parts.map(function(p, j) { return '<div title=\"' + names[j] + '\" style=\"width:' +"
            "    (100 * p / scale) + '%;background:' + colors[j] + '\"></div>'; }).join('');"
            "  out.textContent = 'weights ' + gib(r.weights) + ' + KV cache ' + gib(r.kv) + ' + activations ' +"
            "    gib(r.act) + ' = ' + gib(r.total) + ' (' + Math.round(r.total).toLocaleString('en') + ' bytes); ' +"
            "    (r.gpu ? 'smallest GPU that holds it: ' + r.gpu : 'no single GPU of the list holds it') +"
            "    ' (the bar is drawn against that GPU\\'s memory).';"
            "}"
            "sel.forEach(function(s) { s.addEventListener('change', show); });"
            "show();"
            "})();</script></div>"
        )
