"""Comparison figures: one brightness scale, surface brightness across grids, residuals, files."""
import subprocess
import sys

import astropy.units as u
import numpy as np
import pytest
from astropy.nddata import CCDData, NDData
from astropy.visualization import AsinhStretch, LinearStretch, LogStretch, SqrtStretch
from astropy.visualization.wcsaxes import WCSAxes
from astropy.wcs import WCS

from astrosr.visualization import compare, residual_view

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def fine():
    return np.random.default_rng(0).gamma(2.0, 10.0, size=(32, 32))


@pytest.fixture
def coarse(fine):
    """The same sky 4x coarser: each pixel collects the flux of 4x4 fine pixels."""
    return fine.reshape(8, 4, 8, 4).sum(axis=(1, 3))


@pytest.fixture
def celestial_wcs():
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [16.5, 16.5]
    w.wcs.cdelt = [-0.2 / 3600, 0.2 / 3600]
    return w


def image_axes(fig):
    return [ax for ax in fig.axes if ax.images]


def shown(ax):
    """The array an image axis displays (NaN where it shows 'bad')."""
    return np.ma.getdata(ax.images[0].get_array())


def residual_axes(fig):
    return [ax for ax in image_axes(fig) if ax.get_title() == "residual"]


def test_one_image_axis_per_image(fine, coarse):
    fig = compare([coarse, fine * 1.1, fine], titles=["frame", "estimate", "truth"])
    axes = image_axes(fig)
    assert [ax.get_title() for ax in axes] == ["frame", "estimate", "truth"]
    # Only the images and the colorbar: no stray axes.
    assert len(fig.axes) == 4


def test_residual_row_only_for_images_on_the_reference_grid(fine, coarse):
    fig = compare([coarse, fine * 1.1, fine + 1.0, fine], residual=True)
    # 4 images, residuals for the two fine non-reference images; coarse and reference blank.
    assert len(image_axes(fig)) == 6
    assert len(residual_axes(fig)) == 2
    notes = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "reference" in notes and any("not on the reference's grid" in t for t in notes)


def test_ncols_wraps_images_and_their_residuals(fine):
    fig = compare([fine * 0.9, fine * 1.1, fine + 1.0, fine], residual=True, ncols=2)
    assert fig.axes[0].get_gridspec().get_geometry() == (4, 3)  # 2 image rows + 2 residual rows
    assert len(residual_axes(fig)) == 3


def test_coarse_frame_shown_as_surface_brightness_on_one_scale(fine, coarse):
    fig = compare([coarse, fine], percentile=100.0, reference=0)
    ax_coarse, ax_fine = image_axes(fig)
    block_mean = fine.reshape(8, 4, 8, 4).mean(axis=(1, 3))
    np.testing.assert_allclose(shown(ax_coarse), block_mean)
    np.testing.assert_allclose(shown(ax_fine), fine)
    norms = [ax.images[0].norm for ax in (ax_coarse, ax_fine)]
    assert norms[0].vmin == norms[1].vmin and norms[0].vmax == norms[1].vmax
    # Limits from the coarse frame are those of the block means, inside the fine image's range;
    # without the pixel-area division they would be 16 times too bright.
    assert norms[0].vmin == pytest.approx(block_mean.min())
    assert norms[0].vmax == pytest.approx(block_mean.max())
    assert fine.min() <= norms[0].vmin and norms[0].vmax <= fine.max()
    # Both panels cover the same area in finest-grid pixel coordinates.
    extent = [-0.5, 31.5, -0.5, 31.5]
    assert ax_coarse.images[0].get_extent() == ax_fine.images[0].get_extent() == extent


def test_surface_brightness_units_are_not_rescaled(fine):
    coarse_sb = fine.reshape(8, 4, 8, 4).mean(axis=(1, 3))  # per steradian: a mean, not a sum
    fig = compare([CCDData(coarse_sb, unit="MJy/sr"), CCDData(fine, unit="MJy/sr")])
    np.testing.assert_allclose(shown(image_axes(fig)[0]), coarse_sb)


def test_default_limits_come_from_the_last_image(fine):
    fig = compare([fine * 10.0, fine], percentile=100.0)
    for ax in image_axes(fig):
        assert ax.images[0].norm.vmin == pytest.approx(fine.min())
        assert ax.images[0].norm.vmax == pytest.approx(fine.max())


@pytest.mark.parametrize("stretch, cls", [("asinh", AsinhStretch), ("linear", LinearStretch),
                                          ("log", LogStretch), ("sqrt", SqrtStretch)])
def test_stretch_is_the_astropy_one(fine, stretch, cls):
    fig = compare([fine], stretch=stretch)
    assert isinstance(image_axes(fig)[0].images[0].norm.stretch, cls)


def test_zscale_interval(fine):
    from astropy.visualization import ZScaleInterval

    fig = compare([fine], interval="zscale")
    norm = image_axes(fig)[0].images[0].norm
    assert (norm.vmin, norm.vmax) == pytest.approx(ZScaleInterval().get_limits(fine))


def test_masked_pixels_are_shown_as_nan(fine):
    mask = np.zeros(fine.shape, bool)
    mask[3, 5] = mask[20, 7] = True
    data = fine.copy()
    data[10, 10] = np.inf
    fig = compare([CCDData(data, unit="electron", mask=mask), np.ma.masked_array(fine, mask)])
    for ax in image_axes(fig):
        values = shown(ax)
        assert np.isnan(values[mask]).all()
        assert np.isfinite(values[~mask & np.isfinite(data)]).all()
    assert np.isnan(shown(image_axes(fig)[0])[10, 10])


def test_celestial_wcs_gets_sky_axes(fine, celestial_wcs):
    ccd = CCDData(fine, unit="electron", wcs=celestial_wcs)
    ax_sky, ax_pix = image_axes(compare([ccd, fine]))
    assert isinstance(ax_sky, WCSAxes) and not isinstance(ax_pix, WCSAxes)
    assert ax_sky.coords[0].get_axislabel() == "RA"
    assert not any(isinstance(ax, WCSAxes) for ax in image_axes(compare([ccd, fine], wcs=False)))


def test_nddata_without_wcs_gets_pixel_axes(fine):
    ax, = image_axes(compare([NDData(fine)]))
    assert not isinstance(ax, WCSAxes)
    assert ax.get_xlabel() == "x [pixel]"


def test_units_are_converted_to_the_reference_unit(fine):
    fig = compare([CCDData(fine * 1000.0, unit="mJy"), CCDData(fine, unit="Jy")])
    np.testing.assert_allclose(shown(image_axes(fig)[0]), fine)


def test_residual_row_is_image_minus_reference(fine):
    rng = np.random.default_rng(1)
    a, b = fine + rng.normal(0, 1, fine.shape), fine * 1.05
    fig = compare([a, b, fine], residual=True)
    res_a, res_b = residual_axes(fig)
    np.testing.assert_allclose(shown(res_a), a - fine)
    np.testing.assert_allclose(shown(res_b), b - fine)
    norm = res_a.images[0].norm
    assert norm.vmax > 0 and norm.vmin == -norm.vmax
    assert res_b.images[0].norm.vmax == norm.vmax  # one scale for the whole residual row


def test_residual_view(fine, celestial_wcs):
    estimate = fine + np.random.default_rng(2).normal(0, 1, fine.shape)
    reference = CCDData(fine, unit="electron", wcs=celestial_wcs)
    fig = residual_view(estimate, reference, title="drizzle")
    axes = {ax.get_title(): ax for ax in image_axes(fig)}
    assert sorted(axes) == ["drizzle", "reference", "residual"]
    assert isinstance(axes["reference"], WCSAxes)
    np.testing.assert_allclose(shown(axes["residual"]), estimate - fine)
    assert axes["drizzle"].images[0].norm.vmax == axes["reference"].images[0].norm.vmax


def test_residual_view_needs_one_grid(fine, coarse):
    with pytest.raises(ValueError, match="same grid"):
        residual_view(coarse, fine)


def test_path_writes_png_and_refuses_to_overwrite(fine, tmp_path):
    path = tmp_path / "cmp.png"
    compare([fine], path=path)
    assert path.read_bytes()[:8] == PNG_MAGIC
    path.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match=r"cmp\.png.*overwrite=True"):
        compare([fine], path=path)
    assert path.read_bytes() == b"keep me"
    compare([fine], path=str(path), overwrite=True)
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in tmp_path.iterdir()] == ["cmp.png"]  # no temporary file left


def test_residual_view_path(fine, tmp_path):
    path = tmp_path / "res.png"
    residual_view(fine * 1.01, fine, path=path)
    assert path.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(FileExistsError, match="overwrite=True"):
        residual_view(fine * 1.01, fine, path=path)


def test_failed_write_leaves_nothing(fine, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        compare([fine], path=tmp_path / "cmp.png")
    assert list(tmp_path.iterdir()) == []


def test_format_from_suffix(fine, tmp_path):
    compare([fine], path=tmp_path / "cmp.pdf")
    assert (tmp_path / "cmp.pdf").read_bytes()[:4] == b"%PDF"
    with pytest.raises(ValueError, match="path="):
        compare([fine], path=tmp_path / "cmp.fits")


@pytest.mark.parametrize("kwargs, match", [
    ({"stretch": "hist"}, "stretch='hist'"),
    ({"interval": "minmax"}, "interval='minmax'"),
    ({"titles": ["only one"]}, "titles must be a list of 2"),
    ({"titles": "ab"}, "titles must be a list of 2"),
    ({"reference": 2}, "reference=2 is out of range"),
    ({"reference": -3}, "reference=-3 is out of range"),
    ({"wcs": True}, "wcs=True"),
    ({"ncols": 0}, "ncols=0"),
    ({"percentile": 0}, "percentile=0"),
])
def test_bad_options(fine, kwargs, match):
    with pytest.raises(ValueError, match=match):
        compare([fine, fine], **kwargs)


@pytest.mark.parametrize("images, match", [
    ([], "images is empty"),
    ([np.ones(5)], r"images\[0\] is 1-D"),
    ([np.ones((4, 4)), np.ones((2, 4, 4))], r"images\[1\] is 3-D"),
])
def test_bad_images(images, match):
    with pytest.raises(ValueError, match=match):
        compare(images)


def test_reference_must_be_an_integer(fine):
    with pytest.raises(TypeError, match="reference=0.5 must be an integer"):
        compare([fine, fine], reference=0.5)


def test_reference_without_finite_pixels(fine):
    with pytest.raises(ValueError, match="no finite"):
        compare([fine, np.full((4, 4), np.nan)])


def test_unconvertible_units(fine):
    with pytest.raises(ValueError, match=r"images\[0\] is in adu"):
        compare([CCDData(fine, unit="adu"), CCDData(fine, unit="MJy/sr")])


def test_lone_image_and_stack(fine):
    assert len(image_axes(compare(fine))) == 1
    assert len(image_axes(compare(np.stack([fine, fine, fine])))) == 3
    assert len(image_axes(compare(CCDData(fine, unit=u.electron)))) == 1


def zoom_axes(fig):
    return [ax for ax in image_axes(fig) if ax.get_title() == "zoom"]


def colorbar_labels(fig):
    return [ax.get_ylabel() for ax in fig.axes if not ax.images and not ax.texts]


def test_zoom_row_shows_the_same_region_of_every_image(fine, coarse):
    fig = compare([coarse, fine], titles=["frame", "truth"], zoom=(16, 16, 8))
    assert fig.axes[0].get_gridspec().get_geometry() == (2, 3)  # images, then their zooms
    z_coarse, z_fine = zoom_axes(fig)
    # The same region, 8x8 fine pixels, in finest-grid coordinates (the default grid).
    for ax in (z_coarse, z_fine):
        assert ax.get_xlim() == (12.0, 20.0) and ax.get_ylim() == (12.0, 20.0)
        assert ax.images[0].get_interpolation() == "nearest"  # full resolution, no smoothing
    np.testing.assert_allclose(shown(z_fine), fine)
    norms = [ax.images[0].norm for ax in image_axes(fig)]
    assert len({(n.vmin, n.vmax) for n in norms}) == 1  # one brightness scale, zooms included
    # The region is outlined on each image panel.
    for ax in image_axes(fig):
        if ax.get_title() != "zoom":
            box, = ax.patches
            assert box.get_xy() == (12.0, 12.0) and box.get_width() == box.get_height() == 8.0


def test_zoom_in_own_pixels_of_a_coarse_image(fine, coarse):
    fig = compare([coarse, fine], zoom=(16, 16, 8), grid="own")
    z_coarse, z_fine = zoom_axes(fig)
    # Fine edges 12 and 20 are coarse coordinates (12 + 0.5) / 4 - 0.5 and (20 + 0.5) / 4 - 0.5.
    assert z_coarse.get_xlim() == pytest.approx((2.625, 4.625))
    assert z_fine.get_xlim() == (12.0, 20.0)


def test_zoom_auto_is_centred_on_the_brightest_pixel(fine):
    img = fine.copy()
    img[20, 9] = 10 * fine.max()
    ax = zoom_axes(compare([img], zoom="auto"))[0]
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    assert (x0 + x1) / 2 == pytest.approx(9.0) and (y0 + y1) / 2 == pytest.approx(20.0)
    assert x1 - x0 == 8.0  # at least 8 pixels across


def test_zoom_on_sky_axes(fine, celestial_wcs):
    ccd = CCDData(fine, unit="electron", wcs=celestial_wcs)
    z_sky, z_pix = zoom_axes(compare([ccd, fine], zoom=(16, 16, 8)))
    assert isinstance(z_sky, WCSAxes) and z_sky.get_xlim() == (12.0, 20.0)


def test_zoom_at_the_edge_stays_inside_the_image(fine):
    ax = zoom_axes(compare([fine], zoom=(0, 31, 10)))[0]
    assert ax.get_xlim() == (-0.5, 9.5) and ax.get_ylim() == (21.5, 31.5)


def test_zoom_and_residual_rows(fine):
    fig = compare([fine * 1.1, fine], zoom=(16, 16), residual=True)
    assert fig.axes[0].get_gridspec().get_geometry() == (3, 3)
    assert len(zoom_axes(fig)) == 2 and len(residual_axes(fig)) == 1


def test_own_grid_labels_each_image_in_its_own_pixels(fine, coarse):
    ax_coarse, ax_fine = image_axes(compare([coarse, fine], grid="own"))
    assert ax_coarse.images[0].get_extent() == [-0.5, 7.5, -0.5, 7.5]
    assert ax_fine.images[0].get_extent() == [-0.5, 31.5, -0.5, 31.5]
    assert (ax_coarse.get_xlabel(), ax_fine.get_xlabel()) == ("x [coarse pixel]", "x [fine pixel]")
    # On the finest grid (the default) the labels say which pixels the coordinates are.
    ax_coarse, ax_fine = image_axes(compare([coarse, fine]))
    assert ax_coarse.get_ylabel() == ax_fine.get_ylabel() == "y [finest-grid pixel]"
    ax_coarse, ax_fine = image_axes(compare([coarse, fine], grid="own",
                                            pixel_names=["input pixel", "output pixel"]))
    assert (ax_coarse.get_xlabel(), ax_fine.get_xlabel()) == ("x [input pixel]", "x [output pixel]")


def test_colorbar_label_has_the_unit_per_pixel(fine, coarse):
    ccds = [CCDData(coarse, unit="electron"), CCDData(fine, unit="electron")]
    names = ["input pixel", "fine pixel"]
    assert colorbar_labels(compare(ccds, pixel_names=names)) == ["electron / fine pixel"]
    assert colorbar_labels(compare(ccds[1])) == ["electron / pixel"]
    assert colorbar_labels(compare(CCDData(fine, unit="MJy/sr"))) == ["MJy / sr"]
    assert colorbar_labels(compare(CCDData(fine, unit="electron/pix"))) == ["electron / pix"]
    assert colorbar_labels(compare([fine])) == [""]  # no unit, no label


@pytest.mark.parametrize("kwargs, match", [
    ({"zoom": (1, 2, 3, 4)}, r"zoom=\(1, 2, 3, 4\) must be"),
    ({"zoom": "centre"}, "zoom='centre' must be"),
    ({"zoom": (40, 5)}, "centre must lie inside the finest grid"),
    ({"zoom": (5, 5, 0)}, "size be at least 1"),
    ({"zoom": (np.nan, 5)}, "must be None"),
    ({"grid": "input"}, "grid='input' is unknown"),
    ({"pixel_names": ["px"]}, "pixel_names must be a list of 2"),
    ({"pixel_names": "px"}, "pixel_names must be a list of 2"),
])
def test_bad_zoom_grid_and_pixel_names(fine, kwargs, match):
    with pytest.raises(ValueError, match=match):
        compare([fine, fine], **kwargs)


def test_saved_figure_follows_the_umask(fine, tmp_path):
    import os

    old = os.umask(0o027)
    try:
        compare([fine], path=tmp_path / "cmp.png")
    finally:
        os.umask(old)
    assert (tmp_path / "cmp.png").stat().st_mode & 0o777 == 0o640


def test_import_astrosr_does_not_load_matplotlib():
    code = "import astrosr, sys; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
