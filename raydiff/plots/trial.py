"""The first figure of a trial run, per method: small (about 4 x 3 inches), one axis."""

import numpy as np

from raydiff.plots.common import pyplot

SIZE = (4.2, 3.0)


def _figure():
    return pyplot().subplots(figsize=SIZE)


def radii(epochs, radii, inversion, *, title=None):
    """Class-manifold radius per class over epochs, each class's inversion epoch marked.

    epochs: (T,) ints; radii: (T, C) floats; inversion: {class: epoch} (a class missing
    from it never inverted and has no mark).
    """
    epochs, radii = np.asarray(epochs), np.asarray(radii)
    fig, ax = _figure()
    colors = [f"C{c % 10}" for c in range(radii.shape[1] if radii.ndim == 2 else 0)]
    for c, color in enumerate(colors):
        ax.plot(epochs, radii[:, c], color=color, lw=1, label=str(c))
        if c in inversion and inversion[c] in set(epochs.tolist()):
            at = int(np.flatnonzero(epochs == inversion[c])[0])
            ax.plot(epochs[at], radii[at, c], "o", color=color, ms=5, mec="black", mew=0.6)
    ax.set_xlabel("epoch")
    ax.set_ylabel("radius")
    ax.set_title(title or "radii per class (o = inversion)", fontsize=9)
    if colors:
        ax.legend(fontsize=6, ncol=5, title="class", title_fontsize=6)
    return fig


def sigma_histogram(sigma, is_noisy, *, title=None):
    """Histogram of the per-sample data parameter sigma (N,), clean vs noisy (N,) bool."""
    sigma, is_noisy = np.asarray(sigma, dtype=float), np.asarray(is_noisy, dtype=bool)
    fig, ax = _figure()
    bins = np.histogram_bin_edges(sigma[np.isfinite(sigma)], bins=40)
    ax.hist(sigma[~is_noisy], bins=bins, alpha=0.6, label=f"clean ({(~is_noisy).sum()})")
    if is_noisy.any():
        ax.hist(sigma[is_noisy], bins=bins, alpha=0.6, color="C3",
                label=f"noisy ({is_noisy.sum()})")
    ax.set_xlabel("sigma (score)")
    ax.set_ylabel("samples")
    ax.set_title(title or "data parameter sigma, clean vs noisy", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def data_map(variability, confidence, is_noisy, *, title=None):
    """The Dataset Cartography data map: variability (x) against confidence (y), (N,) each;
    noisy samples (N,) bool in red."""
    variability, confidence = np.asarray(variability), np.asarray(confidence)
    is_noisy = np.asarray(is_noisy, dtype=bool)
    fig, ax = _figure()
    ax.scatter(variability[~is_noisy], confidence[~is_noisy], s=3, alpha=0.4, label="clean")
    if is_noisy.any():
        ax.scatter(variability[is_noisy], confidence[is_noisy], s=3, alpha=0.7, color="C3",
                   label="noisy")
    ax.set_xlabel("variability")
    ax.set_ylabel("confidence")
    ax.set_title(title or "data map", fontsize=9)
    ax.legend(fontsize=7, markerscale=3)
    return fig


def cscore_by_ratio(ratios, per_ratio, is_noisy, *, title=None):
    """Mean held-out accuracy (y) against the subset ratio (x): ``per_ratio`` (R, N), one
    C-score estimate per ratio and sample; clean vs noisy (N,) bool samples."""
    per_ratio, is_noisy = np.asarray(per_ratio, dtype=float), np.asarray(is_noisy, dtype=bool)
    fig, ax = _figure()
    groups = [("clean", ~is_noisy, "tab:blue")] + ([("noisy", is_noisy, "tab:red")]
                                                    if is_noisy.any() else [])
    for name, mask, colour in groups:
        ax.plot(ratios, np.nanmean(per_ratio[:, mask], 1), "o-", color=colour,
                label=f"{name} ({int(mask.sum())})")
    ax.set_xlabel("subset ratio")
    ax.set_ylabel("held-out accuracy (observed label)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title or "C-score by subset ratio", fontsize=9)
    ax.legend(fontsize=7)
    return fig
