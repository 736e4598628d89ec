"""The random streams of one experiment seed, named once.

Every random draw of a trial comes from ``(seed, stream)`` (:func:`raydiff.data.rng_for`,
:func:`raydiff.data.derived_seed`), so that, say, the label noise never shares random
numbers with the initialisation, and the same seed flips the same labels in every
experiment. The numbers are part of every seeded result: changing one moves the numbers
of every run that uses it, so a new stream gets a new number and an old one keeps its own.

Stream 5 names three unrelated draws of three experiment families; they never meet in one
run, so sharing the number is harmless, and each keeps the value its seeded results were
made with.
"""

import numpy as np

NOISE_STREAM = 1        # which samples are made hard, and their new labels (every experiment)
INIT_STREAM = 2         # model initialisation (``derived_seed(seed, INIT_STREAM, run)``)
SPLIT_STREAM = 3        # test / validation hold-outs, imbalance subsampling
BATCH_STREAM = 4        # mini-batch order and augmentation draws of the supervised loop
SMALL_LOSS_BATCH_STREAM = 5   # mini-batch order of train_classifier (the small-loss baseline)
FOLD_STREAM = 5         # crossval's stratified fold assignment
GAN_STREAM = 5          # batch order and every z of a GASTeN GAN run
CSCORE_SUBSET_STREAM = 6  # the random training subset of each C-score model
HARDNESS_CLASS_STREAM = 7   # a hardness kind's class structure: pair permutation,
                            # asymmetric transition rows (drawn once per seed, whatever p)
IMAGE_STREAM = 8        # per-image draws of the image kinds (noise, far-OOD patches, shift side)

STREAMS = {"noise": NOISE_STREAM, "init": INIT_STREAM, "split": SPLIT_STREAM,
           "batch": BATCH_STREAM, "small_loss_batch": SMALL_LOSS_BATCH_STREAM,
           "fold": FOLD_STREAM, "gan": GAN_STREAM, "cscore_subset": CSCORE_SUBSET_STREAM,
           "hardness_class": HARDNESS_CLASS_STREAM, "image": IMAGE_STREAM}


def rng_for(seed, stream):
    """The numpy Generator of ``stream`` for experiment seed ``seed``."""
    return np.random.default_rng([int(seed), int(stream)])
