"""What the generated notebooks (``notebooks/*.ipynb``) use in place of myst-nb's glue.

On the site, a chapter stores computed values with ``myst_nb.glue`` and the prose pastes
them with ``{glue:text}`` roles; figures are pasted with ``{glue:figure}``. Jupyter and
Colab render neither. ``tools/sync_notebooks.py`` therefore writes notebooks in which

* ``from myst_nb import glue`` becomes ``from int4ref.explore.notebook import glue``: the same
  call, which keeps each value (and figure) in :data:`REGISTRY` of this module;
* a paragraph that pastes values becomes a hidden code cell ``markdown(r'''...''')`` whose
  output is the paragraph with the values of *the reader's own run* (``{key:spec}`` fields,
  formatted as myst-nb formats ``{glue:text}`key:spec```; literal braces are doubled);
* a ``{glue:figure}`` becomes a hidden code cell ``figure(key, alt=..., caption=...)`` that
  shows the figure as ``<img alt=...>`` (and PNG) with its caption below.

So the numbers in the prose are always the ones the cells above computed. Book-support
tier: numpy only at import; IPython and matplotlib are imported when used.
"""
from __future__ import annotations

import string
from typing import Any

__all__ = ["REGISTRY", "glue", "format_value", "fill", "markdown", "figure", "GlueError"]

#: name -> value, in the order the notebook glued them (the kernel's lifetime).
REGISTRY: dict[str, Any] = {}


class GlueError(KeyError):
    """A paragraph or figure asks for a value that no cell above has glued (yet)."""

    def __str__(self):  # KeyError would quote the whole message
        return str(self.args[0])


def glue(name: str, value: Any, display: bool = True) -> None:
    """Keep ``value`` under ``name`` for the Markdown and figure cells below (and show it
    now when ``display`` is true, as ``myst_nb.glue`` does)."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"glue name must be a non-empty string, got {name!r}")
    REGISTRY[name] = value
    if display:
        from IPython.display import display as ipy_display

        ipy_display(value)


_INT_TYPES, _FLOAT_TYPES = set("bcdoxX"), set("eEfFgGn%")


def _plain(value: Any) -> Any:
    """What the site's glue would paste for ``value`` without a format: Markdown objects
    give their text; everything else is itself."""
    data = getattr(value, "data", None)
    if isinstance(data, str) and type(value).__name__ in ("Markdown", "Latex", "HTML"):
        return data
    return value


def format_value(value: Any, spec: str = "") -> str:
    """``value`` as ``{glue:text}`key:spec``` pastes it: the last character of ``spec``
    picks the conversion (``d``, ``x``... to int; ``f``, ``e``, ``%``... to float;
    ``s`` to str), then Python's format mini-language applies (``,.0f``, ``.1%``)."""
    value = _plain(value)
    if not spec:
        return str(value)
    kind = spec[-1]
    if kind == "s":
        value = str(value)
    elif kind in _INT_TYPES:
        value = int(value)
    elif kind in _FLOAT_TYPES:
        value = float(value)
    return format(value, spec)


class _GlueFormatter(string.Formatter):
    """``{key:spec}`` fields looked up whole in the registry (keys may hold ``.`` or
    ``-``), formatted by :func:`format_value`."""

    def __init__(self, registry):
        super().__init__()
        self.registry = registry

    def get_field(self, field_name, args, kwargs):
        try:
            return self.registry[field_name], field_name
        except KeyError:
            raise GlueError(
                f"no value named {field_name!r} yet: run the cells above this one first "
                "(Run > Run All Above Selected Cell)") from None

    def format_field(self, value, format_spec):
        return format_value(value, format_spec)


def fill(template: str, registry: dict | None = None) -> str:
    """``template`` with every ``{key:spec}`` replaced by the glued value (``{{``/``}}``
    are literal braces)."""
    return _GlueFormatter(REGISTRY if registry is None else registry).format(template)


class _Markdown:
    """A Markdown display object (kept small: IPython's ``Markdown`` does the same)."""

    def __init__(self, text: str):
        self.data = text

    def _repr_markdown_(self):
        return self.data

    def __repr__(self):
        return self.data


def markdown(template: str, registry: dict | None = None):
    """Show ``template`` as Markdown, filled with this run's values (see :func:`fill`).
    Returns the display object, so that it can also be a cell's last expression."""
    from IPython.display import display as ipy_display

    shown = _Markdown(fill(template, registry))
    ipy_display(shown)
    return None


def _png_and_alt(value: Any, alt: str | None, dpi: int = 100) -> tuple[bytes, str, tuple[int, int] | None]:
    fig = getattr(value, "fig", None)  # an int4ref.explore.viz.show
    own_alt = getattr(value, "alt", None)
    if fig is None and hasattr(value, "savefig"):  # a matplotlib Figure
        fig = value
    if fig is not None:
        from .viz import alt_text, to_png

        text = alt if alt else (own_alt or alt_text(fig))
        size = tuple(int(round(v)) for v in fig.get_size_inches() * dpi)
        return to_png(fig, dpi), text, size
    png = getattr(value, "_repr_png_", None)
    if png is not None:
        return png(), alt or own_alt or "", None
    raise TypeError(f"cannot show a {type(value).__name__} as a figure "
                    "(glue a matplotlib Figure or an int4ref.explore.viz.show)")


class _Figure:
    def __init__(self, png: bytes, alt: str, size):
        self.png, self.alt, self.size = png, alt, size

    def _repr_png_(self):
        return self.png

    def _repr_html_(self):
        from .viz import img_tag

        return img_tag(self.png, self.alt, self.size)

    def __repr__(self):
        return f"<figure: {self.alt}>" if self.alt else "<figure>"


def figure(name: str, alt: str | None = None, caption: str = "", registry: dict | None = None) -> None:
    """Show the figure glued as ``name`` as ``<img alt=...>`` (PNG for front ends without
    HTML), then ``caption`` as Markdown filled with this run's values."""
    from IPython.display import display as ipy_display

    registry = REGISTRY if registry is None else registry
    if name not in registry:
        raise GlueError(f"no figure named {name!r} yet: run the cells above this one first")
    png, text, size = _png_and_alt(registry[name], alt)
    ipy_display(_Figure(png, text, size))
    if caption:
        ipy_display(_Markdown(fill(caption, registry)))


def site_links(text: str, page: str, site: str) -> str:
    """Markdown ``[text](other.md#anchor)`` links relative to ``page`` (e.g. ``book/index``)
    made absolute links to the site's pages (``<site>/book/other.html#anchor``): what the
    site's MyST parser does with them (for the front pages' generated lists)."""
    import posixpath
    import re

    base = posixpath.dirname(page)

    def absolute(m):
        path = posixpath.normpath(posixpath.join(base, m.group(1)))
        return f"]({site.rstrip('/')}/{path}.html{m.group(2) or ''})"

    return re.sub(r"\]\((?![A-Za-z][\w+.-]*:)([^()\s#]+)\.md(#[^()\s]*)?\)", absolute, text)


def site_markdown(page: str, site: str):
    """A ``Markdown`` replacement for cells whose Markdown output the site parses as MyST
    (``mystnb: markdown_format: myst``): its relative ``.md`` links go to the site."""
    def make(text: str):
        return _Markdown(site_links(text, page, site))
    return make
