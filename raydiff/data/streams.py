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

NOISE_STREAM = 1        # which labels are flipped, and to what (every experiment)
INIT_STREAM = 2         # model initialisation (``derived_seed(seed, INIT_STREAM, run)``)
SPLIT_STREAM = 3        # test / validation hold-outs, imbalance subsampling
BATCH_STREAM = 4        # mini-batch order and augmentation draws of the supervised loop
SMALL_LOSS_BATCH_STREAM = 5   # mini-batch order of train_classifier (the small-loss baseline)
FOLD_STREAM = 5         # crossval's stratified fold assignment
GAN_STREAM = 5          # batch order and every z of a GASTeN GAN run
CSCORE_SUBSET_STREAM = 6  # the random training subset of each C-score model

STREAMS = {"noise": NOISE_STREAM, "init": INIT_STREAM, "split": SPLIT_STREAM,
           "batch": BATCH_STREAM, "small_loss_batch": SMALL_LOSS_BATCH_STREAM,
           "fold": FOLD_STREAM, "gan": GAN_STREAM, "cscore_subset": CSCORE_SUBSET_STREAM}
