"""Held to the data means checked: the one test of a result's fit to its inputs.

Every result that claims consistency with the data (`astrosr.fuse` with
``method="reconstruct"``, `astrosr.enhance` with ``consistency="observation"``,
`astrosr.MultiFrameSR`) computes the reduced chi-square of its inputs against
the result observed again through the observation model, and passes it to
`record_fit`. That writes three header keys:

``CHI2RED``
    The reduced chi-square.
``CHI2MAX``
    The bound it was held to (`CHI2_BOUND`).
``CHI2OK``
    True when ``CHI2RED <= CHI2MAX``.

Above the bound it warns with `MisfitWarning` (an
`~astropy.utils.exceptions.AstropyUserWarning`); the ``astrosr`` command
exits with its own status instead of writing the result (unless
``--allow-misfit``).
"""

import warnings

import numpy as np
from astropy.utils.exceptions import AstropyUserWarning

__all__ = ["CHI2_BOUND", "MisfitWarning", "record_fit", "fit_passed", "recorded_number"]

#: A model that reproduces its inputs within their noise has a reduced
#: chi-square of 1 +- sqrt(2/N); a wrong PSF, wrong shifts, an unmodelled
#: saturation or a stopped fit put it well above. The bound leaves room for a
#: noise estimate a few per cent low (real frames without an uncertainty).
CHI2_BOUND = 1.3


class MisfitWarning(AstropyUserWarning):
    """A result does not reproduce its inputs within their noise."""


def record_fit(meta, chi2, *, what, hint, bound=CHI2_BOUND, stacklevel=3):
    """Record a result's fit to its inputs in ``meta``; warn when it fails.

    Parameters
    ----------
    meta : dict or `~astropy.io.fits.Header`
        The result's header (changed in place).
    chi2 : float
        Reduced chi-square of the inputs against the re-observed result.
    what : str
        What was fitted, for the message (e.g. ``"the frames"``).
    hint : str
        What the user can change, for the message.
    bound : float
        The largest reduced chi-square that passes.
    stacklevel : int
        Passed to `warnings.warn`.

    Returns
    -------
    bool
        True when the fit passes.
    """
    chi2 = float(chi2)
    passed = bool(np.isfinite(chi2) and chi2 <= bound)
    meta["CHI2RED"] = (round(chi2, 4), "reduced chi2 of the inputs vs the result")
    meta["CHI2MAX"] = (float(bound), "largest CHI2RED held to be a fit")
    meta["CHI2OK"] = (passed, "result reproduces its inputs within the noise")
    if not passed:
        warnings.warn(f"{what} are not reproduced within their noise: reduced chi-square "
                      f"{chi2:.3g} > {bound:g}; {hint}", MisfitWarning, stacklevel=stacklevel)
    return passed


def fit_passed(meta):
    """False when ``meta`` records a failed fit (``CHI2OK`` False); True otherwise."""
    value = meta.get("CHI2OK", True)
    return bool(value[0] if isinstance(value, tuple) else value)


def recorded_number(meta, key):
    """The number recorded under ``key`` (a value or a ``(value, comment)`` card), or None.

    None when the key is absent or its value is not a number, so a message
    can be written about any header.
    """
    value = meta.get(key)
    value = value[0] if isinstance(value, tuple) else value
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
