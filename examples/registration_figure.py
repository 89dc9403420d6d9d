"""Make the README picture: a simulated frame, the truth, and registration errors.

Run from the repository root: ``python examples/registration_figure.py``
(writes ``docs/_static/demo.png``).
"""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from astropy.visualization import AsinhStretch, ImageNormalize, PercentileInterval  # noqa: E402

import astrosr  # noqa: E402
from astrosr._data import hubble_deep_field  # noqa: E402

truth = hubble_deep_field(512)
stack = astrosr.simulate.observe(truth, n_frames=16, scale=4, psf=astrosr.psf.GaussianPSF(1.2),
                                 sky=100.0, read_noise=5.0, seed=0)
table = astrosr.register_stack(stack.frames)
true = np.column_stack([stack.shifts["dx"].value, stack.shifts["dy"].value])
est = np.column_stack([table["dx"].value, table["dy"].value])
err = np.column_stack([table["dx_err"].value, table["dy_err"].value])

fig, axes = plt.subplots(1, 3, figsize=(13, 4.4))
for ax, img, title in ((axes[0], truth, "truth (fine grid, 512x512)"),
                       (axes[1], stack.frames[5].data, "frame 5 of 16 (128x128, noisy)")):
    norm = ImageNormalize(img, interval=PercentileInterval(99.8), stretch=AsinhStretch(0.05))
    ax.imshow(img, origin="lower", cmap="gray", norm=norm)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
ax = axes[2]
ax.errorbar((est - true)[1:, 0] * 1e3, (est - true)[1:, 1] * 1e3, xerr=err[1:, 0] * 1e3,
            yerr=err[1:, 1] * 1e3, fmt="o", ms=4)
ax.axhline(0, color="0.7", lw=0.8)
ax.axvline(0, color="0.7", lw=0.8)
ax.set_xlabel("dx error [milli-pixel]")
ax.set_ylabel("dy error [milli-pixel]")
rms = np.sqrt(np.mean((est - true)[1:] ** 2))
ax.set_title(f"register_stack: RMS error {rms * 1e3:.1f} mpx")
fig.tight_layout()
fig.savefig("docs/_static/demo.png", dpi=90)
print("wrote docs/_static/demo.png")
