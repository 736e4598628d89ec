"""The one place that sets up matplotlib (headless) and saves a figure."""


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend: trials and reports run headless."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save(fig, path, *, dpi=110):
    """Write ``fig`` as a PNG at ``path`` (tight bounding box) and free it: a trial draws
    many figures, and pyplot keeps every open one alive."""
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)
    return path
