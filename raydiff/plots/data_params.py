"""The per-class enrichment figures of the data-parameters method: which samples the
instance sigma trajectory calls easy, hard or in need of review."""

import numpy as np

from raydiff.plots.common import pyplot
from raydiff.plots.images import thumb

BORDER = {"easy": "tab:green", "hard": "tab:red", "review": "tab:orange", "": "lightgray"}


def enrichment(traj, category, images, *, title, strip_size=8, tsne_perplexity=50.0,
               tsne_thumbnails=150, trajectories_per_label=3):
    """The figures of one class: [(name, Figure)] for the easy / hard / need-review strip
    (if ``images``), the t-SNE of the trajectories (thumbnails or dots) and a few
    trajectories of each label.

    traj : (n, E) instance sigma of the class's samples over the epochs
    category : (n,) "easy" / "hard" / "review" / "" (no label)
    images : (n, C, H, W) uint8, or None (not an image dataset)
    strip_size : images per row of the strip (the easiest by final sigma, the hardest, the
        highest peaks); also bounds the candidates the trajectories are drawn from
    tsne_perplexity : capped at (n - 1) / 3, the largest t-SNE accepts
    tsne_thumbnails : images drawn on the t-SNE (labelled samples first)
    """
    plt = pyplot()
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    final, peak = traj[:, -1], traj.max(axis=1)
    order = {"easy": np.argsort(final, kind="stable"), "hard": np.argsort(-final, kind="stable"),
             "review": np.argsort(-peak, kind="stable")}
    rows = {name: [i for i in order[name] if category[i] == name][:strip_size]
            for name in ("easy", "hard", "review")}
    out = []
    cmap = "gray" if images is not None and images.shape[1] == 1 else None
    if images is not None:
        fig, axes = plt.subplots(3, strip_size, squeeze=False, figsize=(1.2 * strip_size, 4.0))
        for r, name in enumerate(rows):
            for j, ax in enumerate(axes[r]):
                ax.set_xticks([]), ax.set_yticks([])
                if j < len(rows[name]):
                    i = rows[name][j]
                    ax.imshow(thumb(images[i]), cmap=cmap)
                    ax.set_title(f"{final[i]:.2f}", fontsize=7)
                    for spine in ax.spines.values():
                        spine.set_edgecolor(BORDER[name]), spine.set_linewidth(3)
                else:
                    ax.set_frame_on(False)     # keeps the row's label visible
            axes[r][0].set_ylabel(name, fontsize=9)
        fig.suptitle(f"{title}: easy / hard / need review (final sigma above each)", fontsize=9)
        out.append(("strip", fig))

    if len(traj) >= 5 and traj.shape[1] >= 2:
        from sklearn.manifold import TSNE
        perplexity = min(tsne_perplexity, (len(traj) - 1) / 3)
        xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=0
                  ).fit_transform(traj.astype(np.float64))
        fig, ax = plt.subplots(figsize=(7, 7))
        ax.scatter(xy[:, 0], xy[:, 1], s=6, c=[BORDER[c] for c in category])
        if images is not None:
            # labelled samples first, then the rest, up to the thumbnail budget
            ranked = np.argsort([c == "" for c in category], kind="stable")
            for i in ranked[:tsne_thumbnails]:
                box = AnnotationBbox(OffsetImage(thumb(images[i]), zoom=0.6, cmap=cmap),
                                     xy[i], frameon=True, pad=0.1,
                                     bboxprops={"edgecolor": BORDER[category[i]], "lw": 2})
                ax.add_artist(box)
        ax.set_title(f"{title}: t-SNE of sigma trajectories (perplexity {perplexity:.0f})",
                     fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
        out.append(("tsne", fig))

    fig, ax = plt.subplots(figsize=(6, 3.5))
    epochs = np.arange(1, traj.shape[1] + 1)
    for name in ("easy", "hard", "review"):
        for j, i in enumerate(rows[name][:trajectories_per_label]):
            ax.plot(epochs, traj[i], color=BORDER[name], label=name if j == 0 else None)
    ax.set_xlabel("epoch"), ax.set_ylabel("instance sigma"), ax.set_yscale("log")
    ax.set_title(f"{title}: trajectories", fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    out.append(("trajectories", fig))
    return out
