"""GASTeN figures: the ambiguous images' 2-D embedding among the real test images, and
the prototypes beside their saliency maps (grids of images: :mod:`raydiff.plots.images`)."""

import numpy as np

from raydiff.plots.common import pyplot


def embedding(amb_xy, test_xy, labels, clusters, prototypes, test_y, *, pos, neg, reducer):
    """The 2-D embedding: real test images of class ``pos`` / ``neg`` (``test_xy`` (m, 2),
    ``test_y`` (m,) 1 = pos), the ambiguous images (``amb_xy`` (n, 2)) coloured by their
    cluster (``labels`` (n,), -1 = noise; ``clusters`` the ids drawn, in colour order), and
    the ``prototypes`` (indices into the ambiguous images) as stars."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 5))
    for value, name, color in ((1, f"test: {pos}", "lightsteelblue"),
                               (0, f"test: {neg}", "navajowhite")):
        pts = test_xy[test_y == value]
        ax.scatter(pts[:, 0], pts[:, 1], s=6, c=color, label=name)
    cmap = plt.get_cmap("tab10")
    for k, c in enumerate(clusters):
        pts = amb_xy[labels == c]
        ax.scatter(pts[:, 0], pts[:, 1], s=10, color=cmap(k % 10), label=f"ambiguous, cluster {c}")
    if (labels < 0).any():
        pts = amb_xy[labels < 0]
        ax.scatter(pts[:, 0], pts[:, 1], s=8, c="gray", marker="x", label="ambiguous, noise")
    if len(prototypes):
        pts = amb_xy[list(prototypes)]
        ax.scatter(pts[:, 0], pts[:, 1], s=160, marker="*", c="black", label="prototypes")
    ax.legend(fontsize=6, markerscale=1)
    ax.set_title(f"{reducer} 2-D embedding of classifier features", fontsize=9)
    return fig


def saliency(images, maps, clusters):
    """Each prototype (``images`` (k, 1, H, W) in [-1, 1]) above its saliency map
    (``maps`` (k, H, W), |dC/dx|), titled by its cluster (``clusters``, k ids)."""
    plt = pyplot()
    images = np.asarray(images)
    fig, axes = plt.subplots(2, len(clusters), figsize=(1.6 * len(clusters), 3.4), squeeze=False)
    for k, c in enumerate(clusters):
        axes[0, k].imshow(images[k, 0], cmap="gray", vmin=-1, vmax=1)
        axes[0, k].set_title(f"cluster {c}", fontsize=7)
        axes[1, k].imshow(maps[k], cmap="hot")
        for ax in axes[:, k]:
            ax.axis("off")
    fig.suptitle("prototypes and |dC/dx|", fontsize=8)
    return fig
