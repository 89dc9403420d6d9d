"""Dask-backed images: `enhance_blocks` and `fuse_blocks` give the whole-image calls' numbers.

Tiny images (48x40 for the network, 6 frames of 40x36 for fusion) in small blocks, so that
every block has neighbours and halos; the smallest shipped network (``srcnn-x4``, receptive
radius 3 input pixels, hence ``overlap=4``).
"""
import re

import numpy as np
import pytest
from astropy import units as u
from astropy.nddata import CCDData, NDData, StdDevUncertainty
from astropy.table import QTable
from astropy.wcs import WCS

import astrosr
from astrosr import simulate
from astrosr.parallel import BlockImage, enhance_blocks, fuse_blocks, is_dask_backed
from astrosr.psf import GaussianPSF

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")

MODEL = "srcnn-x4"
NETWORK = dict(ensemble=2, overlap=4)  # overlap above srcnn-x4's receptive radius
S = 4


def _wcs(crpix, cdelt):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [10.0, 20.0]
    w.wcs.crpix = crpix
    w.wcs.cdelt = [-cdelt, cdelt]
    return w


def _lazy(ccd, chunks):
    """``ccd`` with its data and uncertainty as dask arrays of blocks ``chunks``."""
    out = ccd.copy()
    out.data = da.from_array(ccd.data, chunks=chunks)
    if ccd.uncertainty is not None:
        out.uncertainty = type(ccd.uncertainty)(da.from_array(ccd.uncertainty.array,
                                                               chunks=chunks))
    return out


def _close(a, b, rtol):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert np.abs(a - b).max() <= rtol * max(np.abs(b).max(), 1e-300)


def _same_header(blocks, whole, who):
    """Every card equal; HISTORY equal but for ``time=`` and the card of ``who``."""
    cards = {k for k in {*blocks.meta, *whole.meta} if k not in ("HISTORY", "")}
    assert {k: blocks.meta.get(k) for k in cards} == {k: whole.meta.get(k) for k in cards}
    ours = "".join(blocks.meta["HISTORY"])
    assert f"astrosr.parallel.{who}:" in ours
    ours = ours.split(f"astrosr.parallel.{who}:")[0]
    assert re.sub(r"time=\S+", "", ours) == re.sub(r"time=\S+", "", "".join(whole.meta["HISTORY"]))


# --------------------------------------------------------------------------- enhance


@pytest.fixture(scope="module")
def image():
    pytest.importorskip("tensorflow")
    truth = simulate.make_sky((192, 160), n_stars=20, n_galaxies=1, nebula=True,
                              star_flux=(5e3, 2e5), seed=1)
    f = simulate.observe(truth, n_frames=1, scale=S, psf=GaussianPSF(1.2), seed=2).frames[0]
    f.data = f.data - 100.0
    f.wcs = _wcs([10.0, 12.0], 1e-4)
    f.mask = np.zeros(f.shape, bool)
    f.mask[5, 7] = True
    f.data[30, 31] = np.nan
    return f


@pytest.fixture(scope="module")
def lazy_image(image):
    return _lazy(image, (16, 20))


def _check_enhanced(result, whole):
    assert isinstance(result, BlockImage)
    computed = result.compute()
    _close(computed.data, whole.data, 1e-5)
    _close(computed.uncertainty.array, whole.uncertainty.array, 1e-5)
    np.testing.assert_array_equal(computed.mask, whole.mask)
    assert computed.unit == whole.unit
    assert computed.wcs.to_header() == whole.wcs.to_header()
    _same_header(computed, whole, "enhance_blocks")


@pytest.mark.parametrize("consistency", [None, "pixel"])
def test_enhance_blocks_equals_enhance(image, lazy_image, consistency):
    result = enhance_blocks(lazy_image, MODEL, consistency=consistency, **NETWORK)
    for array in (result.data, result.uncertainty.array, result.mask):
        assert isinstance(array, da.Array)
    assert result.data.chunks == ((S * 16,) * 3, (S * 20,) * 2)
    whole = astrosr.enhance(image, MODEL, consistency=consistency, **NETWORK)
    assert whole.mask.sum() == 2 * S * S  # the masked pixel and the NaN
    _check_enhanced(result, whole)


def test_output_written_block_by_block(image, lazy_image, tmp_path):
    options = dict(consistency="pixel", **NETWORK)
    path = tmp_path / "sr.fits"
    result = enhance_blocks(lazy_image, MODEL, output=path, **options)
    assert path.is_file() and isinstance(result.data, da.Array)
    _check_enhanced(result, astrosr.enhance(image, MODEL, output=tmp_path / "whole.fits",
                                            **options))
    with pytest.raises(FileExistsError, match="overwrite"):
        enhance_blocks(lazy_image, MODEL, output=path, **options)


def test_halo_wider_than_the_blocks(image, lazy_image):
    # The default margin (32) and its halo exceed the 16x20 blocks: merged for the work, the
    # result keeps the blocks asked for.
    result = enhance_blocks(lazy_image, MODEL, consistency="pixel", ensemble=1)
    assert result.data.chunks == ((S * 16,) * 3, (S * 20,) * 2)
    _check_enhanced(result, astrosr.enhance(image, MODEL, consistency="pixel", ensemble=1))


def test_numpy_image_saturation_and_surface_brightness(image):
    # No uncertainty (the noise is estimated on the whole image), a clipped maximum shared by 4
    # pixels (saturated, found on the whole image), a surface-brightness unit.
    data = np.nan_to_num(image.data.copy())
    data[20:22, 10:12] = data.max() + 10.0
    ccd = CCDData(data, unit="MJy/sr", wcs=image.wcs)
    result = enhance_blocks(ccd, MODEL, chunks=(16, 20), consistency="pixel", **NETWORK)
    whole = astrosr.enhance(ccd, MODEL, consistency="pixel", **NETWORK)
    assert whole.mask[S * 20:S * 22, S * 10:S * 12].all()
    _check_enhanced(result, whole)


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster, set_as_default=False) as c:
        yield c


@pytest.mark.parametrize("scheduler", ["synchronous", "distributed"])
def test_any_scheduler(image, lazy_image, scheduler, request):
    # The statistics before the blocks and the blocks themselves, on that scheduler. (One
    # ensemble member: a worker traces the network once per block shape and rotation.)
    where = request.getfixturevalue("client") if scheduler == "distributed" else scheduler
    options = dict(consistency="pixel", ensemble=1, overlap=4)
    whole = astrosr.enhance(image, MODEL, **options)
    with dask.config.set(scheduler=where):
        _check_enhanced(enhance_blocks(lazy_image, MODEL, **options), whole)


def test_observation_consistency_runs_whole(image, lazy_image):
    options = dict(psf=GaussianPSF(1.2), ensemble=1, overlap=4)
    result = enhance_blocks(lazy_image, MODEL, **options)
    assert isinstance(result.data, da.Array)
    assert result.data.chunks == ((S * 16,) * 3, (S * 20,) * 2)
    whole = astrosr.enhance(image, MODEL, **options)
    assert "computed in memory" in "".join(result.meta["HISTORY"])
    assert result.meta["CHI2RED"] == whole.meta["CHI2RED"]
    _check_enhanced(result, whole)


# --------------------------------------------------------------------------- fuse


@pytest.fixture(scope="module")
def stack():
    truth = simulate.make_sky((160, 144), n_stars=20, n_galaxies=1, nebula=True, seed=3)
    return simulate.observe(NDData(truth, wcs=_wcs([70.0, 80.0], 2.5e-5)), n_frames=6,
                            scale=S, psf=GaussianPSF(1.0), seed=4, bad_pixel_fraction=0.01)


def _check_fused(result, whole, rows=8):
    assert isinstance(result, BlockImage)
    for array in (result.data, result.uncertainty.array, result.mask, result.weight):
        assert isinstance(array, da.Array)
    computed = result.compute()
    for a, b in ((computed.data, whole.data), (computed.weight, whole.weight),
                 (computed.uncertainty.array, whole.uncertainty.array)):
        _close(a, b, 1e-6)
    np.testing.assert_array_equal(computed.mask, whole.mask)
    np.testing.assert_array_equal(computed.rejected, whole.rejected)
    assert type(computed.uncertainty) is type(whole.uncertainty)
    assert computed.unit == whole.unit
    assert (computed.wcs is None and whole.wcs is None) or \
        computed.wcs.to_header() == whole.wcs.to_header()
    _same_header(computed, whole, "fuse_blocks")
    assert result.data.chunks[0][0] == S * rows
    return computed


@pytest.mark.parametrize("method", ["drizzle", "shift_and_add"])
def test_fuse_blocks_equals_fuse(stack, method):
    options = dict(scale=S, method=method, reject=False)
    if method == "drizzle":
        options["pixfrac"] = 0.7
    frames = [_lazy(f, (8, 36)) for f in stack.frames]
    result = fuse_blocks(frames, stack.shifts, **options)
    assert "strips of 8 reference rows" in "".join(result.meta["HISTORY"])
    whole = astrosr.fuse(stack.frames, stack.shifts, **options)
    assert whole.meta["NCOMBINE"] == 6
    _check_fused(result, whole)
    kept = result.persist(scheduler="threads")
    assert isinstance(kept, BlockImage) and isinstance(kept.mask, da.Array)
    _check_fused(kept, whole)


def test_fuse_blocks_weights_are_the_whole_frames(stack):
    # Frames whose noise differs between their top and bottom rows: the median variance of a
    # strip is not the frame's, so weights estimated per strip would change the result.
    frames = []
    for i, f in enumerate(stack.frames):
        noisy = f.uncertainty.array * np.where(np.arange(40)[:, None] < 16 + i, 1.0, 9.0)
        frames.append(CCDData(f.data, unit=f.unit, wcs=f.wcs, mask=f.mask,
                              uncertainty=StdDevUncertainty(np.sqrt(noisy))))
    whole = astrosr.fuse(frames, stack.shifts, scale=S, reject=False)
    result = fuse_blocks([_lazy(f, (8, 36)) for f in frames], stack.shifts, scale=S,
                         reject=False)
    computed = _check_fused(result, whole)
    assert isinstance(computed.uncertainty, StdDevUncertainty)


def test_fuse_blocks_cube_without_uncertainty(stack):
    # A 3-D array: the noise of each frame is estimated on the whole frame; numpy with chunks=.
    cube = np.stack([np.nan_to_num(f.data) for f in stack.frames])
    with pytest.warns(UserWarning, match="look raw") as ours:
        result = fuse_blocks(da.from_array(cube, chunks=(1, 10, 36)), stack.shifts, scale=S,
                             reject=False, chunks=8)
    with pytest.warns(UserWarning, match="look raw") as theirs:
        whole = astrosr.fuse(cube, stack.shifts, scale=S, reject=False)
    assert [str(w.message) for w in ours] == [str(w.message) for w in theirs]
    _check_fused(result, whole)
    numpy_result, said = _warned(fuse_blocks, cube, stack.shifts, scale=S, reject=False,
                                 chunks=8)
    assert said == [str(w.message) for w in theirs]
    _check_fused(numpy_result, whole)


@pytest.mark.parametrize("options", [
    dict(method="reconstruct", psf=GaussianPSF(1.0), max_iter=20),
    dict(method="drizzle"),  # reject="auto": on for 6 frames, which needs the whole stack
])
def test_global_methods_run_whole(stack, options):
    frames = [_lazy(f, (8, 36)) for f in stack.frames]
    result, ours = _warned(fuse_blocks, frames, stack.shifts, scale=S, **options)
    assert "computed in memory" in "".join(result.meta["HISTORY"])
    whole, theirs = _warned(astrosr.fuse, stack.frames, stack.shifts, scale=S, **options)
    assert ours == theirs
    _check_fused(result, whole)


def _warned(function, *args, **kwargs):
    """``function``'s result and the messages of the warnings it gave."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = function(*args, **kwargs)
    return result, [str(w.message) for w in caught]


def test_other_geometries_run_whole(stack):
    geometry = QTable(stack.shifts)
    geometry["rotation"] = [0.0, 0.5, 0.0, 0.0, 0.0, 0.0] * u.deg
    frames = [_lazy(f, (8, 36)) for f in stack.frames]
    result = fuse_blocks(frames, geometry, scale=S, reject=False)
    assert "pure shifts" in "".join(result.meta["HISTORY"])
    _check_fused(result, astrosr.fuse(stack.frames, geometry, scale=S, reject=False))


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("chunks", [(16,), (16, 20, 4), (0, 20), (16, 2.5), "16", True])
def test_bad_chunks(chunks):
    ccd = CCDData(np.ones((48, 40)), unit="electron")
    with pytest.raises(ValueError, match="chunks must be one or two positive integers"):
        enhance_blocks(ccd, MODEL, chunks=chunks, consistency=None)


def test_bad_inputs(stack):
    ccd = CCDData(np.ones((48, 40)), unit="electron")
    with pytest.raises(ValueError, match="give chunks="):
        enhance_blocks(ccd, MODEL, consistency=None)
    with pytest.raises(TypeError, match="unknown option"):
        enhance_blocks(ccd, MODEL, chunks=16, pixfrac=0.5)
    with pytest.raises(ValueError, match="consistency must be one of"):
        enhance_blocks(ccd, MODEL, chunks=16, consistency="exact")
    with pytest.raises(ValueError, match="a positive integer .reference rows per strip"):
        fuse_blocks(stack.frames, stack.shifts, scale=S, chunks=(8, 36))
    with pytest.raises(ValueError, match="give chunks=ROWS"):
        fuse_blocks(stack.frames, stack.shifts, scale=S)
    with pytest.raises(TypeError, match="unknown option"):
        fuse_blocks(stack.frames, stack.shifts, scale=S, chunks=8, tile=64)
    with pytest.raises(ValueError, match="are not used by method='shift_and_add'"):
        fuse_blocks(stack.frames, stack.shifts, scale=S, chunks=8, method="shift_and_add",
                    pixfrac=0.5, reject=False)


def test_is_dask_backed(stack):
    lazy = _lazy(stack.frames[0], (8, 36))
    assert is_dask_backed(lazy) and is_dask_backed(lazy.data)
    assert is_dask_backed([stack.frames[1], lazy]) and is_dask_backed(da.zeros((2, 4, 4)))
    assert not is_dask_backed(stack.frames[0]) and not is_dask_backed(stack.frames)
    assert not is_dask_backed(np.zeros((4, 4))) and not is_dask_backed("frames/*.fits")


# --------------------------------------------------------------------------- dispatch


def test_enhance_and_fuse_dispatch_to_the_blocks(image, lazy_image, stack):
    # astrosr.enhance / astrosr.fuse with chunks=, or given dask-backed input: the same lazy
    # result as enhance_blocks / fuse_blocks.
    blocks = enhance_blocks(lazy_image, MODEL, consistency=None, **NETWORK).compute()
    for given in (dict(ccd=lazy_image), dict(ccd=image, chunks=(16, 20))):
        result = astrosr.enhance(model=MODEL, consistency=None, **NETWORK, **given)
        assert isinstance(result, BlockImage)
        assert result.data.chunks == ((S * 16,) * 3, (S * 20,) * 2)
        np.testing.assert_array_equal(result.compute().data, blocks.data)
    with pytest.raises(ValueError, match="consistency must be one of"):
        astrosr.enhance(image, MODEL, consistency="exact", chunks=16)
    options = dict(scale=S, reject=False, pixfrac=0.7)
    frames = [_lazy(f, (8, 36)) for f in stack.frames]
    blocks = fuse_blocks(frames, stack.shifts, **options).compute()
    for result in (astrosr.fuse(frames, stack.shifts, **options),
                   astrosr.fuse(stack.frames, stack.shifts, chunks=8, **options)):
        assert isinstance(result, BlockImage)
        np.testing.assert_array_equal(result.compute().data, blocks.data)
    with pytest.raises(ValueError, match="are not used by method='shift_and_add'"):
        astrosr.fuse(frames, stack.shifts, scale=S, method="shift_and_add", pixfrac=0.5)
