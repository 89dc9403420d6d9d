"""Comparison figures: images of the same sky side by side, on one brightness scale.

A super-resolved image is judged by eye against its inputs and, on simulated
skies, against the truth. The figures here make that comparison fair: every
panel shares one `~astropy.visualization.ImageNormalize` (stretch and limits
from one reference image), and images sampled on grids of different pixel
scale are first brought to the same surface brightness, so that a coarse
input frame and a fine reconstruction of the same sky look alike when they
agree.

matplotlib is imported by the functions, never when `astrosr` is imported,
and figures are built on `matplotlib.figure.Figure` with an Agg canvas: no
pyplot state is touched and no backend is selected for the user.
"""

import os
from typing import NamedTuple

import numpy as np

__all__ = ["compare", "residual_view"]

_STRETCHES = ("asinh", "linear", "log", "sqrt")
_INTERVALS = ("percentile", "zscale")
_GRIDS = ("finest", "own")
_PANEL_INCHES = 3.0
_DPI = 120


class _Image(NamedTuple):
    """One input image as the figure sees it."""

    data: np.ndarray  # float, 2-D, masked and non-finite pixels are NaN
    wcs: object  # the NDData's WCS, or None
    unit: object  # the NDData's unit, or None


def compare(images, *, titles=None, stretch="asinh", interval="percentile", percentile=99.5,
            reference=None, residual=False, ncols=None, figsize=None, cmap="gray", wcs="auto",
            path=None, overwrite=False, zoom=None, grid="finest", pixel_names=None):
    """Show images of the same sky side by side, on one brightness scale.

    Every panel uses the same `~astropy.visualization.ImageNormalize`: the
    stretch is applied between limits computed from the ``reference`` image.
    Images may be sampled on grids of different pixel scale (a 32x32 input
    frame next to 128x128 reconstructions): each is assumed to cover the
    same sky, is drawn over the same panel area, and, when its unit is per
    pixel (or it has none), is divided by its pixel area relative to the
    finest grid, ``(ny_max / ny) * (nx_max / nx)``, so that all panels show
    surface brightness per finest-grid pixel. Images in surface-brightness
    units (per solid angle, e.g. MJy/sr) are not rescaled.

    Parameters
    ----------
    images : list of array_like, `~astropy.units.Quantity` or `~astropy.nddata.NDData`
        The 2-D images, left to right. For `~astropy.nddata.NDData` (and
        `~astropy.nddata.CCDData`) the ``data`` is shown, masked pixels as
        NaN (the colormap's "bad" colour), as are those of a masked array.
        Images with units are converted to the unit of the reference image.
        A 3-D array is taken as a stack of images; a single 2-D image is
        shown alone.
    titles : list of str, optional
        One title per image.
    stretch : {"asinh", "linear", "log", "sqrt"}
        The `astropy.visualization` stretch (`~astropy.visualization.AsinhStretch`,
        `~astropy.visualization.LinearStretch`, `~astropy.visualization.LogStretch`,
        `~astropy.visualization.SqrtStretch`).
    interval : {"percentile", "zscale"}
        How the limits are set from the reference image:
        `~astropy.visualization.PercentileInterval` (``percentile``) or
        `~astropy.visualization.ZScaleInterval`.
    percentile : float
        Percentage of the reference's finite pixels kept between the limits
        (``interval="percentile"``); also sets the residual row's range, as
        this percentile of the absolute residuals.
    reference : int, optional
        Index of the image that sets the limits and that residuals are taken
        against. Default: the last image (typically the truth).
    residual : bool
        Add a row under the images with ``image - reference`` (in the
        reference's unit) for each image on the reference's grid (same
        shape), on a symmetric linear scale with its own colorbar. Other
        images, and the reference itself, get a blank panel with a note.
    ncols : int, optional
        Panels per row (default: all images in one row). With ``residual``,
        each row of images is followed by its row of residuals.
    figsize : tuple of float, optional
        Figure size in inches (default: about 3 inches per panel).
    cmap : str or `~matplotlib.colors.Colormap`
        Colormap of the images (the residuals use a diverging one).
    wcs : {"auto", False}
        ``"auto"``: a panel whose image is an `~astropy.nddata.NDData` with a
        celestial `~astropy.wcs.WCS` is drawn on
        `~astropy.visualization.wcsaxes.WCSAxes` (sky coordinates on its own
        pixel grid). `False`: every panel has pixel axes (see ``grid``).
    path : str or path-like, optional
        Save the figure there (at 120 dpi, in the format named by the suffix;
        PNG when there is none). The file is written to a temporary file in
        the same folder and then renamed, so a failure leaves nothing behind.
    overwrite : bool
        Replace an existing file at ``path``.
    zoom : None, "auto" or tuple of float, optional
        Add a row of zoom panels under each row of images: the same small
        region of the sky in every image, at full resolution (nearest-neighbour
        pixels, so a coarse frame shows its blocks and a finer grid its finer
        sampling), on the same brightness scale; the region is outlined on the
        images. ``(x, y)`` or ``(x, y, size)``: its centre in 0-based pixels of
        the finest grid and its side in finest-grid pixels (default: an eighth
        of the finest grid's smaller side, at least 8). ``"auto"``: centred on
        the brightest pixel of the reference. None: no zoom row.
    grid : {"finest", "own"}
        Coordinates of the pixel axes. ``"finest"``: every panel in pixels of
        the finest grid (0-based pixel centres; a coarse pixel ``p`` spans
        ``s*p - 0.5`` to ``s*(p + 1) - 0.5``). ``"own"``: each panel in its
        own image's pixels (a 32x32 frame is labelled 0 to 31 beside a
        128x128 reconstruction labelled 0 to 127). Panels on
        `~astropy.visualization.wcsaxes.WCSAxes` are always in their own pixels.
    pixel_names : list of str, optional
        One name per image for its pixels in the axis labels, e.g.
        ``["input pixel", "fine pixel"]`` gives ``"x [input pixel]"``. The
        colorbar's label is the reference's unit per pixel of the finest grid
        (``"electron / fine pixel"``), or the unit alone for
        surface-brightness units. Default: ``"pixel"`` when all images are on
        one grid; otherwise ``"finest-grid pixel"`` with ``grid="finest"``, and
        ``"fine pixel"`` (the finest grid) or ``"coarse pixel"`` with
        ``grid="own"``.

    Returns
    -------
    `~matplotlib.figure.Figure`
        The figure, not registered with pyplot (display it in a notebook by
        returning it, or save it with ``path``).

    Raises
    ------
    ValueError
        For no images, an image that is not 2-D, ``titles`` or
        ``pixel_names`` of the wrong length, an unknown ``stretch``,
        ``interval``, ``wcs`` or ``grid``, a ``zoom`` that is not a region
        inside the finest grid, a
        ``percentile`` outside (0, 100], an ``ncols`` below 1, a
        ``reference`` out of range, a
        reference with no finite pixel, units that cannot be converted to
        the reference's, or an unsupported file suffix.
    TypeError
        If ``reference`` is not an integer.
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.

    See Also
    --------
    residual_view : One image against its reference, with the residual.

    Examples
    --------
    >>> import numpy as np
    >>> from astrosr.visualization import compare
    >>> truth = np.random.default_rng(0).gamma(2.0, size=(64, 64))
    >>> frame = truth.reshape(16, 4, 16, 4).sum(axis=(1, 3))  # 4x coarser, same sky
    >>> fig = compare([frame, truth], titles=["input", "truth"])
    >>> len(fig.axes)  # two panels and the colorbar
    3
    >>> fig = compare([frame, truth], zoom=(32, 32, 8), grid="own",
    ...               pixel_names=["input pixel", "fine pixel"])
    >>> len(fig.axes)  # two panels, their two zooms and the colorbar
    5
    """
    images = _as_list(images)
    _check_options(stretch=stretch, interval=interval, percentile=percentile, wcs=wcs,
                   ncols=ncols, grid=grid)
    panels = [_as_image(image, f"images[{i}]") for i, image in enumerate(images)]
    ref = _reference_index(reference, len(panels))
    titles = _check_titles(titles, len(panels))
    names = _pixel_names(pixel_names, panels, grid)
    if path is not None:
        _check_path(path, overwrite=overwrite)
    panels = _to_reference_unit(panels, ref)
    shown = _surface_brightness(panels)
    region = _zoom_region(zoom, shown[ref], _finest_shape(panels))
    norm = _image_norm(shown[ref], stretch=stretch, interval=interval, percentile=percentile)
    residuals = _residuals(panels, ref) if residual else None
    fig = _draw(panels, shown, norm, residuals, titles=titles, ncols=ncols, figsize=figsize,
                cmap=cmap, wcs=wcs, percentile=percentile, ref=ref, region=region, grid=grid,
                names=names)
    if path is not None:
        _save(fig, path, overwrite=overwrite)
    return fig


def residual_view(image, reference, *, title=None, path=None, overwrite=False):
    """Show an image, its reference and the residual ``image - reference``.

    The image and the reference share one asinh stretch with limits from the
    reference; the residual is on a symmetric linear scale. This is
    `compare` with ``residual=True`` and the reference last.

    Parameters
    ----------
    image, reference : array_like or `~astropy.nddata.NDData`
        2-D images on the same grid (e.g. a reconstruction and the truth).
    title : str, optional
        Title of the image's panel (default ``"image"``).
    path : str or path-like, optional
        Save the figure there (see `compare`).
    overwrite : bool
        Replace an existing file at ``path``.

    Returns
    -------
    `~matplotlib.figure.Figure`
        Images in the top row, the residual under the image.

    Raises
    ------
    ValueError
        If the two images are not 2-D arrays of the same shape, and in the
        cases listed in `compare`.
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.

    See Also
    --------
    compare : Any number of images, on grids of different pixel scale.

    Examples
    --------
    >>> import numpy as np
    >>> from astrosr.visualization import residual_view
    >>> truth = np.random.default_rng(0).gamma(2.0, size=(64, 64))
    >>> estimate = truth + np.random.default_rng(1).normal(0.0, 0.1, truth.shape)
    >>> fig = residual_view(estimate, truth, title="estimate")
    """
    shapes = [_as_image(x, name).data.shape
              for x, name in ((image, "image"), (reference, "reference"))]
    if shapes[0] != shapes[1]:
        raise ValueError(f"image {shapes[0]} and reference {shapes[1]} must be on the same grid "
                         "(same shape) for a residual; use compare() for different grids")
    return compare([image, reference], titles=[title or "image", "reference"], reference=1,
                   residual=True, path=path, overwrite=overwrite)


# -- input checks ---------------------------------------------------------------


def _as_list(images):
    """The images as a list; a lone 2-D image or a 3-D stack is accepted too."""
    from astropy.nddata import NDData

    # Iterating a lone 2-D array would give its rows: catch it before it reads as 1-D images.
    if isinstance(images, NDData) or (isinstance(images, np.ndarray) and images.ndim == 2):
        images = [images]
    images = list(images)
    if not images:
        raise ValueError("images is empty: give a list of at least one 2-D image")
    return images


def _check_options(*, stretch, interval, percentile, wcs, ncols, grid="finest"):
    if stretch not in _STRETCHES:
        raise ValueError(f"stretch={stretch!r} is unknown: use one of {', '.join(_STRETCHES)}")
    if interval not in _INTERVALS:
        raise ValueError(f"interval={interval!r} is unknown: use one of {', '.join(_INTERVALS)}")
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile={percentile!r} must be in (0, 100]")
    # Not `wcs in ("auto", False)`: 0 == False would pass, and an array would fail.
    if wcs is not False and not (isinstance(wcs, str) and wcs == "auto"):
        raise ValueError(f"wcs={wcs!r} is unknown: use 'auto' or False")
    if ncols is not None and (isinstance(ncols, bool) or not isinstance(ncols, (int, np.integer))
                              or ncols < 1):
        raise ValueError(f"ncols={ncols!r} must be a positive integer (or None for one row)")
    if not (isinstance(grid, str) and grid in _GRIDS):
        raise ValueError(f"grid={grid!r} is unknown: use one of {', '.join(_GRIDS)}")


def _as_image(image, name):
    """Float data with masked and non-finite pixels as NaN, plus the WCS and unit if any."""
    from astropy.nddata import NDData

    wcs, unit, mask = None, getattr(image, "unit", None), np.ma.getmask(image)
    if isinstance(image, NDData):
        # Not getattr(image, "data"): a plain ndarray's .data is its raw buffer.
        wcs, mask, image = image.wcs, image.mask, image.data
    data = np.array(np.ma.getdata(image), dtype=float)
    if data.ndim != 2:
        raise ValueError(f"{name} is {data.ndim}-D with shape {data.shape}: "
                         "every image must be 2-D")
    if mask is not None and mask is not np.ma.nomask:
        data[np.broadcast_to(np.asarray(mask, bool), data.shape)] = np.nan
    data[~np.isfinite(data)] = np.nan
    return _Image(data, wcs, unit)


def _reference_index(reference, n):
    if reference is None:
        return n - 1
    if isinstance(reference, bool) or not isinstance(reference, (int, np.integer)):
        raise TypeError(f"reference={reference!r} must be an integer index into images")
    if not -n <= reference < n:
        raise ValueError(f"reference={reference} is out of range for {n} image(s)")
    return int(reference) % n


def _check_titles(titles, n):
    if titles is None:
        return [None] * n
    if isinstance(titles, str) or len(titles) != n:
        got = "a str" if isinstance(titles, str) else f"{len(titles)} titles"
        raise ValueError(f"titles must be a list of {n} str, one per image; got {got}")
    return list(titles)


def _pixel_names(names, panels, grid):
    """One name per image for its pixels in the axis labels (see ``compare``)."""
    n = len(panels)
    if names is not None:
        if (isinstance(names, str) or len(names) != n
                or not all(isinstance(x, str) and x for x in names)):
            got = "a str" if isinstance(names, str) else f"{names!r}"
            raise ValueError(f"pixel_names must be a list of {n} non-empty str, one per image; "
                             f"got {got}")
        return list(names)
    finest = _finest_shape(panels)
    if all(p.data.shape == finest for p in panels):
        return ["pixel"] * n
    if grid == "finest":
        return ["finest-grid pixel"] * n
    return ["fine pixel" if p.data.shape == finest else "coarse pixel" for p in panels]


def _zoom_region(zoom, reference, finest):
    """The zoom's edges ``(x0, x1, y0, y1)`` in finest-grid pixel coordinates, or None."""
    if zoom is None:
        return None
    ny, nx = finest
    default = float(max(8, min(ny, nx) // 8))
    if isinstance(zoom, str) and zoom == "auto":
        if reference.shape != finest:  # the brightest pixel, on the finest grid
            ry, rx = finest[0] / reference.shape[0], finest[1] / reference.shape[1]
        else:
            ry = rx = 1.0
        iy, ix = np.unravel_index(np.nanargmax(reference), reference.shape)
        x, y, size = rx * (ix + 0.5) - 0.5, ry * (iy + 0.5) - 0.5, default
    else:
        try:
            values = [float(v) for v in zoom]
        except (TypeError, ValueError):
            values = []
        if len(values) not in (2, 3) or not np.all(np.isfinite(values)):
            raise ValueError(f"zoom={zoom!r} must be None, 'auto', (x, y) or (x, y, size) in "
                             "pixels of the finest grid")
        x, y = values[:2]
        size = values[2] if len(values) == 3 else default
        if not (-0.5 <= x <= nx - 0.5 and -0.5 <= y <= ny - 0.5) or not 1 <= size:
            raise ValueError(f"zoom={zoom!r}: the centre must lie inside the finest grid "
                             f"({nx}x{ny} pixels) and the size be at least 1 pixel")
    size = min(size, nx, ny)
    # Kept inside the image: a region at the edge shows as much as a central one.
    x0 = float(np.clip(x - size / 2, -0.5, nx - 0.5 - size))
    y0 = float(np.clip(y - size / 2, -0.5, ny - 0.5 - size))
    return (x0, x0 + size, y0, y0 + size)


def _to_reference_unit(panels, ref):
    """Convert images with units to the reference's unit (one brightness scale needs one unit)."""
    target = panels[ref].unit
    out = []
    for i, panel in enumerate(panels):
        if target is None or panel.unit is None or panel.unit == target:
            out.append(panel)
            continue
        try:
            factor = panel.unit.to(target)
        except Exception as exc:  # astropy raises UnitConversionError (a UnitsError)
            raise ValueError(f"images[{i}] is in {panel.unit}, which cannot be shown on the "
                             f"scale of the reference (images[{ref}], {target}): convert it first"
                             ) from exc
        out.append(_Image(panel.data * factor, panel.wcs, target))
    return out


# -- what is shown ----------------------------------------------------------------


def _is_surface_brightness(unit):
    """True for units per solid angle (MJy/sr, erg/s/cm2/arcsec2): these need no pixel area."""
    if unit is None:
        return False
    decomposed = unit.decompose()
    return any(str(base) == "rad" and power == -2
               for base, power in zip(decomposed.bases, decomposed.powers))


def _finest_shape(panels):
    return (max(p.data.shape[0] for p in panels), max(p.data.shape[1] for p in panels))


def _surface_brightness(panels):
    """Each image per finest-grid pixel: a coarse pixel holds the flux of (s_y * s_x) fine ones."""
    ny_max, nx_max = _finest_shape(panels)
    shown = []
    for panel in panels:
        ny, nx = panel.data.shape
        area = 1.0 if _is_surface_brightness(panel.unit) else (ny_max / ny) * (nx_max / nx)
        shown.append(panel.data / area)
    return shown


def _image_norm(data, *, stretch, interval, percentile):
    """One normalisation for every panel, with limits from the reference's finite pixels."""
    from astropy.visualization import (AsinhStretch, ImageNormalize, LinearStretch, LogStretch,
                                       PercentileInterval, SqrtStretch, ZScaleInterval)

    finite = data[np.isfinite(data)]
    if finite.size == 0:
        raise ValueError("the reference image has no finite, unmasked pixel to set the limits from")
    chooser = PercentileInterval(percentile) if interval == "percentile" else ZScaleInterval()
    vmin, vmax = chooser.get_limits(finite)
    stretches = {"asinh": AsinhStretch, "linear": LinearStretch, "log": LogStretch,
                 "sqrt": SqrtStretch}
    # clip=True: log and sqrt of values below vmin would otherwise be NaN and look masked.
    return ImageNormalize(vmin=vmin, vmax=vmax, stretch=stretches[stretch](), clip=True)


def _residuals(panels, ref):
    """``image - reference`` for images on the reference's grid, else None (reference: None)."""
    target = panels[ref].data
    return [panel.data - target if i != ref and panel.data.shape == target.shape else None
            for i, panel in enumerate(panels)]


def _residual_norm(residuals, percentile):
    """Symmetric linear limits +-v, v the ``percentile`` of |residual| over all residual panels."""
    from astropy.visualization import ImageNormalize

    values = np.concatenate([np.empty(0)] + [np.abs(r[np.isfinite(r)]) for r in residuals
                                             if r is not None])
    v = float(np.percentile(values, percentile)) if values.size else 0.0
    # Identical images give v = 0, which would divide by zero: any positive range shows 0 as 0.
    v = v if v > 0 else 1.0
    return ImageNormalize(vmin=-v, vmax=v)


# -- drawing ----------------------------------------------------------------------


def _draw(panels, shown, norm, residuals, *, titles, ncols, figsize, cmap, wcs, percentile, ref,
          region=None, grid="finest", names=None):
    """The figure: rows of images, each followed by its zoom and residual rows when asked."""
    n = len(panels)
    names = ["pixel"] * n if names is None else names
    ncols = n if ncols is None else min(int(ncols), n)
    zoom_row = 1 if region is not None else 0
    fig, gspec = _figure(n, ncols, extra_rows=zoom_row + (residuals is not None),
                         figsize=figsize)
    finest = _finest_shape(panels)
    step = 1 + zoom_row + (residuals is not None)
    rnorm = _residual_norm(residuals, percentile) if residuals is not None else None
    unit, rbar = panels[ref].unit, False
    finest_name = next((names[i] for i, p in enumerate(panels) if p.data.shape == finest),
                       "pixel")
    for i, panel in enumerate(panels):
        row, col = divmod(i, ncols)
        projection = _projection(panel, wcs)
        own = projection is not None or grid == "own"
        extent = _extent(panel.data.shape if own else finest)
        # The zoom's edges in this panel's coordinates (its own pixels, or the finest grid's).
        box = _region_in(region, panel.data.shape, finest) if own else region
        im = _panel(fig, gspec[step * row, col], shown[i], norm, cmap=cmap, title=titles[i],
                    projection=projection, extent=extent, pixel_name=names[i])
        if i == 0:
            _colorbar(fig, gspec[0, -1], im, _unit_label(unit, finest_name))
        if region is not None:
            _outline(im.axes, box)
            _panel(fig, gspec[step * row + 1, col], shown[i], norm, cmap=cmap, title="zoom",
                   projection=projection, extent=extent, pixel_name=names[i], limits=box)
        if residuals is None:
            continue
        rrow = step * row + 1 + zoom_row
        if residuals[i] is None:
            _note(fig, gspec[rrow, col],
                  "reference" if i == ref else "no residual:\nnot on the reference's grid")
            continue
        rim = _panel(fig, gspec[rrow, col], residuals[i], rnorm, cmap=_residual_cmap(),
                     title="residual", projection=projection, extent=extent,
                     pixel_name=names[i])
        if not rbar:  # one residual colorbar, beside the first residual row that has one
            _colorbar(fig, gspec[rrow, -1], rim, _unit_label(unit, names[ref]))
            rbar = True
    return fig


def _region_in(region, shape, finest):
    """Finest-grid edges in the pixel coordinates of an image of ``shape``: p -> (p+0.5)/s - 0.5."""
    if region is None:
        return None
    x0, x1, y0, y1 = region
    sx, sy = finest[1] / shape[1], finest[0] / shape[0]
    return ((x0 + 0.5) / sx - 0.5, (x1 + 0.5) / sx - 0.5,
            (y0 + 0.5) / sy - 0.5, (y1 + 0.5) / sy - 0.5)


def _outline(ax, box):
    """The zoom's region drawn on an image panel."""
    from matplotlib.patches import Rectangle

    x0, x1, y0, y1 = box
    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="#ffcc00",
                           linewidth=0.8))


def _unit_label(unit, pixel_name):
    """The colorbar's label: the unit, per finest-grid pixel unless per solid angle or pixel."""
    if unit is None:
        return None
    text = unit.to_string()
    if _is_surface_brightness(unit) or "pix" in {str(b) for b in unit.bases}:
        return text
    return f"{text} / {pixel_name}"


def _residual_cmap():
    """Diverging, white at zero; masked pixels grey so they do not read as a perfect match."""
    import matplotlib

    return matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.6")


def _figure(n, ncols, *, extra_rows=0, figsize):
    """An Agg-backed figure and its grid, with a narrow last column for the colorbars."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    nrows = -(-n // ncols) * (1 + int(extra_rows))
    if figsize is None:
        figsize = (_PANEL_INCHES * ncols + 1.0, _PANEL_INCHES * nrows + 0.3)
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)  # a canvas of its own: no pyplot, no global backend
    grid = fig.add_gridspec(nrows, ncols + 1, width_ratios=[1.0] * ncols + [0.06])
    return fig, grid


def _extent(shape):
    """0-based pixel centres of a grid of ``shape``: with the finest grid's, every image,
    coarse or fine, spans the same area in the same coordinates."""
    ny, nx = shape
    return (-0.5, nx - 0.5, -0.5, ny - 0.5)


def _projection(panel, wcs):
    """The celestial WCS to draw the panel on, or None for pixel axes."""
    from astropy.wcs import WCS

    if wcs is False or not isinstance(panel.wcs, WCS) or not panel.wcs.has_celestial:
        return None
    return panel.wcs.celestial


def _panel(fig, spec, data, norm, *, cmap, title, projection, extent, pixel_name="pixel",
           limits=None):
    """One image panel (``extent``: its pixel coordinates; WCS panels use their own pixels).

    ``limits`` ``(x0, x1, y0, y1)`` shows only that region (a zoom panel).
    """
    ax = fig.add_subplot(spec, projection=projection)
    kwargs = {} if projection is not None else {"extent": extent}
    im = ax.imshow(data, norm=norm, cmap=cmap, origin="lower", interpolation="nearest", **kwargs)
    if limits is not None:
        ax.set_xlim(limits[0], limits[1])
        ax.set_ylim(limits[2], limits[3])
    if title is not None:
        ax.set_title(title)
    _label_axes(ax, projection, pixel_name)
    return im


def _note(fig, spec, text):
    """A blank panel that says why it is blank (keeps the grid readable)."""
    ax = fig.add_subplot(spec)
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")


def _colorbar(fig, spec, im, label):
    cbar = fig.colorbar(im, cax=fig.add_subplot(spec))
    ticks = _ticks(im.norm)
    cbar.set_ticks(ticks, labels=[f"{t:g}" for t in ticks])  # 170, not 1.7e+02
    if label is not None:
        cbar.set_label(label)


def _ticks(norm, n=5):
    """Ticks evenly spaced in the stretched scale: a linear locator crowds an asinh bar's top."""
    values = norm.inverse(np.linspace(0.0, 1.0, n))
    values = np.asarray(values, dtype=float).ravel()
    # Two significant figures: readable labels, and still distinct ticks.
    return np.unique([float(f"{v:.2g}") for v in values])


def _label_axes(ax, projection, pixel_name="pixel"):
    if projection is None:
        ax.set_xlabel(f"x [{pixel_name}]")
        ax.set_ylabel(f"y [{pixel_name}]")
        return
    for coord, ctype in zip(ax.coords, projection.wcs.ctype):
        coord.set_ticks(number=3)  # sexagesimal labels are long: more overlap in a 3-inch panel
        coord.set_axislabel(_WORLD_NAMES.get(ctype.split("-")[0], ctype.split("-")[0]))


_WORLD_NAMES = {"RA": "RA", "DEC": "Dec", "GLON": "Galactic longitude",
                "GLAT": "Galactic latitude", "ELON": "Ecliptic longitude",
                "ELAT": "Ecliptic latitude"}


# -- saving ------------------------------------------------------------------------


def _check_path(path, *, overwrite):
    """Refuse before drawing: an existing file, or a suffix matplotlib cannot write."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists: pass overwrite=True to replace it")
    suffix = os.path.splitext(path)[1][1:].lower()
    if suffix and suffix not in FigureCanvasAgg.get_supported_filetypes():
        raise ValueError(f"path={path!r}: cannot write a {suffix!r} file; use .png, .pdf or .svg")


def _save(fig, path, *, overwrite):
    """Write through `astrosr.files.replacing`: no partial file on failure, the user's mode."""
    from .files import replacing

    fmt = os.path.splitext(os.fspath(path))[1][1:].lower() or "png"
    with replacing(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format=fmt, dpi=_DPI)
