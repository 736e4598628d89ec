"""Images drawn as thumbnails and grids, shared by the image figures of several methods."""

import numpy as np

from raydiff.plots.common import pyplot


def thumb(img):
    """(C, H, W) uint8 -> an array imshow draws (H, W) grey or (H, W, 3) colour."""
    return img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1)


def image_grid(images, *, ncols=8, titles=None, title=None, size=1.0):
    """A figure of images (N, 1, H, W) in [-1, 1] (numpy, or a tensor on any device),
    ``ncols`` a row, ``titles`` (N,) above each."""
    plt = pyplot()
    if hasattr(images, "detach"):                      # a torch tensor, without importing torch
        images = images.detach().cpu().numpy()
    images = np.asarray(images)
    n = max(len(images), 1)
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + (0.3 if title else 0)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            ax.imshow(images[i, 0], cmap="gray", vmin=-1, vmax=1)
            if titles is not None:
                ax.set_title(titles[i], fontsize=6)
    if title:
        fig.suptitle(title, fontsize=8)
    return fig
