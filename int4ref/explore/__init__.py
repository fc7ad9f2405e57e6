"""Book support: figures, the interactive explorers and what the notebooks use for glue.

This tier needs matplotlib (and ipywidgets for a live explorer); the numpy core never
imports it.

==============================  ==========================================================
:mod:`.viz`                     the book's data plots (histograms, error sweeps, layouts)
:mod:`.figures`                 the concept pictures (groups, scale tree, packing, GPTQ)
:mod:`.explorer`                what every explorer shares: :class:`Control`,
                                :class:`Explorer`, the test data (``sample``)
:mod:`.format_explorer`         :class:`FormatExplorer`: format x group size x outlier
:mod:`.nf4_builder`             :class:`NF4Builder`: NF4 from normal quantiles
:mod:`.double_quant_explorer`   :class:`DoubleQuantExplorer`: bits saved against error added
:mod:`.nibble_inspector`        :class:`NibbleInspector`: codes, bytes, both nibble layouts
:mod:`.fit_explorer`            :class:`FitExplorer`: will a model fit on a GPU?
:mod:`.static_explorer`         an explorer's precomputed states behind sliders, for a page
                                without a kernel
:mod:`.notebook`                ``glue`` and the paragraphs of the generated notebooks
==============================  ==========================================================

In a notebook::

    from int4ref.explore import FormatExplorer
    FormatExplorer().widget()
"""
from __future__ import annotations

from .double_quant_explorer import DoubleQuantExplorer
from .explorer import Control, Explorer
from .fit_explorer import FitExplorer
from .format_explorer import FormatExplorer
from .nf4_builder import NF4Builder
from .nibble_inspector import NibbleInspector

__all__ = ["Control", "Explorer", "FormatExplorer", "NF4Builder", "DoubleQuantExplorer", "NibbleInspector",
           "FitExplorer", "EXPLORERS"]

#: The explorers ``python -m int4ref.bench widgets`` times, by short name.
EXPLORERS = {
    "format": FormatExplorer,
    "nf4": NF4Builder,
    "double_quant": DoubleQuantExplorer,
    "nibble": NibbleInspector,
}
