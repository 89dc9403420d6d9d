"""The output builder: results as CCDData, with what they carry beside the image.

`ResultImage` is the `~astropy.nddata.CCDData` that `astrosr.fuse`,
`astrosr.enhance` and `astrosr.MultiFrameSR` return. Beside data, unit,
uncertainty, mask, WCS and header it carries the weight map (``weight``) and
the input pixels rejected as outliers (``rejected``), as the drizzle
package's ``Drizzle`` exposes ``out_wht``: they survive ``.copy()`` and are
written as the ``WHT`` and ``REJECT`` extensions by ``.write()`` and
`astrosr.nddata.write_fits`; `astrosr.nddata.read_fits` reads them back.
"""

import numpy as np
from astropy import units as u
from astropy.nddata import CCDData, InverseVariance, StdDevUncertainty, VarianceUncertainty

__all__ = ["ResultImage", "output_header", "is_surface_brightness", "uncertainty_like",
           "OUTPUT_KEYS"]

#: Header keys of the reference frame that a result keeps.
OUTPUT_KEYS = ("TELESCOP", "INSTRUME", "FILTER", "OBJECT", "BUNIT", "DATE-OBS", "EXPTIME")


class ResultImage(CCDData):
    """A `~astropy.nddata.CCDData` result with its weight map and rejected pixels.

    Parameters
    ----------
    *args, **kwargs
        As `~astropy.nddata.CCDData`.
    weight : array_like, optional
        The weight map, shape of the image (drizzle's ``out_wht``; for
        reconstruct, the Fisher information of each pixel).
    rejected : array_like of bool, optional
        The input pixels rejected as outliers, shape of the stack ``(n, ny, nx)``.

    Notes
    -----
    Given another `ResultImage` as data (as ``.copy()`` does), it takes that
    one's ``weight`` and ``rejected`` unless new ones are given.
    """

    def __init__(self, *args, weight=None, rejected=None, **kwargs):
        super().__init__(*args, **kwargs)
        source = args[0] if args else kwargs.get("data")
        if isinstance(source, ResultImage):
            weight = source.weight if weight is None else weight
            rejected = source.rejected if rejected is None else rejected
        copy = bool(kwargs.get("copy", False))
        self.weight = None if weight is None else np.array(weight, dtype=float, copy=copy or None)
        self.rejected = None if rejected is None else np.array(rejected, dtype=bool,
                                                               copy=copy or None)

    def to_hdu(self, *args, **kwargs):
        """As `~astropy.nddata.CCDData.to_hdu`, with the ``WHT`` and ``REJECT`` extensions."""
        from astropy.io import fits

        hdul = super().to_hdu(*args, **kwargs)
        if self.weight is not None:
            hdul.append(fits.ImageHDU(np.asarray(self.weight, dtype=np.float32), name="WHT"))
        if self.rejected is not None:
            hdul.append(fits.ImageHDU(np.asarray(self.rejected, dtype=np.uint8), name="REJECT"))
        return hdul


def output_header(meta):
    """A new header with the reference frame's keys that stay true on the output (`OUTPUT_KEYS`)."""
    from astropy.io import fits

    hdr = fits.Header()
    for key in OUTPUT_KEYS:
        if key in meta:
            hdr[key] = meta[key]
    return hdr


def is_surface_brightness(unit):
    """True for units per solid angle (MJy/sr, erg/s/cm2/arcsec2), which keep surface brightness."""
    if unit is None:
        return False
    try:
        decomposed = unit.decompose()
    except Exception:  # noqa: BLE001 - unknown/composite units: treat as per pixel
        return False
    return dict(zip(decomposed.bases, decomposed.powers)).get(u.rad, 0) <= -2


def uncertainty_like(var, uncertainty):
    """The output variance in the uncertainty class of the input (Variance by default)."""
    if isinstance(uncertainty, StdDevUncertainty):
        return StdDevUncertainty(np.sqrt(var))
    if isinstance(uncertainty, InverseVariance):
        with np.errstate(divide="ignore"):
            return InverseVariance(np.where(var > 0, 1.0 / np.where(var > 0, var, 1.0), 0.0))
    return VarianceUncertainty(var)
