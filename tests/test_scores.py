import numpy as np
import pytest
from scipy.special import softmax

from raydiff.scores import (SCORES, auroc, average_precision, confidence, detection, energy,
                            get_score, margin, needs_of, scores_for, top_k, top_k_mask)
from raydiff.scores import precision_at_k
from raydiff.scores.confident_learning import label_issue_score, label_issues
from raydiff.scores.dynamics import (aum, cartography, cartography_confidence,
                                     cartography_correctness, cartography_variability, el2n,
                                     forgetting_events)


def test_confidence_and_energy_rank_flat_logits_harder():
    peaked = np.array([[10.0, 0, 0], [0, 8.0, 0]])
    flat = np.array([[0.3, 0.2, 0.1], [0.1, 0.1, 0.2]])
    logits = np.vstack([peaked, flat])
    for score in (confidence(logits), energy(logits)):
        assert score[2:].min() > score[:2].max()


def test_energy_matches_definition_and_temperature():
    logits = np.array([[1.0, 2.0, 3.0]])
    assert energy(logits)[0] == pytest.approx(-np.log(np.exp(logits).sum()))
    assert energy(logits, temperature=2.0)[0] == pytest.approx(-2 * np.log(np.exp(logits / 2).sum()))
    with pytest.raises(ValueError, match="temperature"):
        energy(logits, temperature=0)


def test_margin_positive_exactly_when_misclassified():
    logits = np.array([[3.0, 1.0], [1.0, 3.0]])
    assert list(margin(logits, labels=[0, 0]) > 0) == [False, True]


def test_detection_metrics_perfect_reversed_and_random():
    positive = np.array([1, 1, 0, 0, 0], dtype=bool)
    perfect = np.array([5.0, 4, 3, 2, 1])
    assert auroc(perfect, positive) == 1.0
    assert auroc(-perfect, positive) == 0.0
    assert average_precision(perfect, positive) == 1.0
    assert precision_at_k(perfect, positive, k=2) == 1.0
    assert precision_at_k(perfect, positive, k=0.4) == 1.0
    rng = np.random.default_rng(0)
    many = rng.random(20000) < 0.2
    assert auroc(rng.random(20000), many) == pytest.approx(0.5, abs=0.02)
    assert average_precision(rng.random(20000), many) == pytest.approx(0.2, abs=0.02)


def test_unknown_score_lists_valid_names():
    with pytest.raises(ValueError, match="confidence"):
        get_score("nope")


# -- the registry: every registered score finds a planted truth from its input ------------

N, C, HARD = 200, 4, 20          # the first HARD samples are the planted hard ones


def _planted(needs, rng):
    """(values, labels) of input ``needs`` in which the first HARD samples are hard: the
    model is unsure of them, its answers flip between epochs / checkpoints, or it (out of
    fold) prefers another class than their label."""
    labels = rng.integers(0, C, N)
    onehot = np.eye(C)[labels]
    other = np.eye(C)[(labels + 1) % C]
    hard = np.arange(N) < HARD
    if needs == "logits":          # clean: peaked on the label; hard: flat, unsure
        logits = 6.0 * onehot + rng.normal(0, 0.3, (N, C))
        logits[hard] = rng.normal(0, 0.3, (HARD, C))
        return logits, labels
    if needs in ("trajectory", "early_logits"):   # (E, N, C); hard: the label, barely
        epochs = 8                                  # ahead, alternates with another class
        traj = np.stack([5.0 * onehot + rng.normal(0, 0.3, (N, C)) for _ in range(epochs)])
        for e in range(epochs):
            traj[e, hard] = (1.0 * onehot[hard] if e % 2 == 0 else 5.0 * other[hard]) \
                + rng.normal(0, 0.3, (HARD, C))
        return traj, labels
    if needs == "grad_norms":      # (R, N); hard: large loss gradients in every run
        norms = rng.gamma(2.0, 0.5, (3, N))
        norms[:, hard] += 3.0
        return norms, labels
    if needs == "embeddings":      # (N, D); clean: along their class's direction; hard:
        dirs = rng.normal(0, 1, (C, 16))           # along another class's
        emb = dirs[labels] + rng.normal(0, 0.2, (N, 16))
        emb[hard] = dirs[(labels[hard] + 1) % C] + rng.normal(0, 0.2, (HARD, 16))
        return emb, labels
    if needs == "dropout_probs":   # (T, N, C); hard: the passes disagree, label rarely won
        logits = 5.0 * onehot[None] + rng.normal(0, 0.5, (10, N, C))
        logits[:, hard] = rng.normal(0, 2.0, (10, HARD, C))
        return softmax(logits, axis=2), labels
    if needs == "augmented_probs":  # (1 + A, N, C); hard: augmentations move the answer
        logits = np.repeat(5.0 * onehot[None], 5, axis=0) + rng.normal(0, 0.1, (5, N, C))
        logits[1:, hard] = 5.0 * np.eye(C)[rng.integers(0, C, (4, HARD))]
        return softmax(logits, axis=2), labels
    if needs == "detector_probs":  # (N,); hard: the detector is fairly sure
        prob = rng.uniform(0.0, 0.4, N)
        prob[hard] = rng.uniform(0.6, 1.0, HARD)
        return prob, labels
    if needs == "oof_probs":       # clean: most mass on the label; hard: on another class
        probs = 0.8 * onehot + 0.2 / C + rng.uniform(0, 0.02, (N, C))
        probs[hard] = 0.8 * other[hard] + 0.2 / C
        return probs / probs.sum(axis=1, keepdims=True), labels
    if needs == "gradients":       # (K, N, P); hard: the gradient moves between checkpoints
        grads = np.repeat(rng.normal(0, 1, (1, N, 16)), 6, axis=0) + rng.normal(0, 0.01, (6, N, 16))
        grads[:, hard] += rng.normal(0, 1.0, (6, HARD, 16))
        return grads, labels
    if needs == "holdout":         # (held_out, correct, ratios) of 90 models at 3 ratios;
        ratios = np.repeat([0.2, 0.5, 0.8], 30)   # hard: wrong whenever held out
        held_out = rng.random((90, N)) > ratios[:, None]
        correct = rng.random((90, N)) < 0.9
        correct[:, hard] = ~held_out[:, hard]
        return (held_out, correct, ratios), labels
    raise AssertionError(f"no planted truth for score input {needs!r}: add one here")


@pytest.mark.parametrize("needs,name", [(needs, name) for needs, scores in SCORES.items()
                                        for name in scores])
def test_every_registered_score_ranks_planted_hard_samples_first(needs, name):
    # AUROC > 0.95 also fixes the direction: a score oriented higher = easier gets ~0.05
    values, labels = _planted(needs, np.random.default_rng(0))
    score = get_score(name)(values, labels=labels)
    assert score.shape == (N,) and np.isfinite(score).all()
    hard = np.arange(N) < HARD
    assert auroc(score, hard) > 0.95, (name, auroc(score, hard))
    assert needs_of(name) == needs


def test_registry_lookups_and_the_small_loss_score():
    assert set(scores_for("logits")) >= {"confidence", "energy", "margin", "small_loss"}
    with pytest.raises(ValueError, match="logits"):
        scores_for("pixels")
    logits = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    expected = -np.log(np.exp(logits[[0, 1], [0, 2]]) / np.exp(logits).sum(axis=1))
    assert np.allclose(get_score("small_loss")(logits, labels=[0, 2]), expected)


def test_top_k_rule_rounds_down_like_the_noise_and_decides_nothing_at_zero():
    # 0.29 * 100 is 28.999...: the noise flips int(N * ratio) = 28 labels, top_k flags 28
    assert top_k(100, 0.29) == 28 == int(100 * 0.29)
    assert top_k_mask(np.arange(10.0), 0.05) is None
    mask = top_k_mask(np.array([0.1, 0.9, 0.5, 0.9]), 0.5)
    assert mask.tolist() == [False, True, False, True]      # ties: lower index first


def test_detection_is_nan_without_both_groups_and_counts_k_from_the_ratio():
    score = np.array([4.0, 3, 2, 1])
    assert np.isnan(detection(score, np.zeros(4, bool), 0.5)["auroc"])
    quality = detection(score, np.array([True, False, True, False]), 0.5)
    assert quality["precision_at_k"] == 0.5 and quality["auroc"] == 0.75


# -- training-dynamics and confident-learning scores (moved from the benchmark tests) ----

def planted_trajectory(n=60, classes=3, epochs=8, n_bad=10, seed=0):
    """Logits (T, N, C) of a model that learns every true label; the first ``n_bad``
    samples carry a wrong given label, so their given label keeps losing."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, classes, n)
    given = true.copy()
    given[:n_bad] = (true[:n_bad] + 1) % classes
    logits = rng.normal(0, 0.3, (epochs, n, classes))
    ramp = np.linspace(0.5, 4.0, epochs)[:, None]
    logits[:, np.arange(n), true] += ramp
    bad = np.zeros(n, dtype=bool)
    bad[:n_bad] = True
    return logits, given, bad


@pytest.mark.parametrize("score", [aum, cartography_confidence, cartography_correctness,
                                   forgetting_events])
def test_trajectory_scores_rank_the_planted_wrong_labels_first(score):
    logits, given, bad = planted_trajectory()
    s = score(logits, labels=given)
    assert s.shape == (len(given),)
    assert auroc(s, bad) == 1.0


def test_el2n_ranks_wrong_labels_first_and_averages_runs():
    logits, given, bad = planted_trajectory()
    one = el2n(logits[2], labels=given)
    assert auroc(one, bad) == 1.0
    both = el2n(logits[[2, 5]], labels=given)
    assert np.allclose(both, (one + el2n(logits[5], labels=given)) / 2)
    assert 0 <= one.min() and one.max() <= np.sqrt(2)


def test_cartography_statistics_and_variability_of_a_flip_flopping_sample():
    # sample 0: always right and sure; sample 1: alternates sure-right and sure-wrong
    logits = np.zeros((4, 2, 2))
    logits[:, 0, 0] = 10.0
    logits[[0, 2], 1, 0] = 10.0
    logits[[1, 3], 1, 1] = 10.0
    labels = np.array([0, 0])
    stats = cartography(logits, labels=labels)
    assert stats["confidence"] == pytest.approx([1.0, 0.5], abs=1e-4)
    assert stats["variability"] == pytest.approx([0.0, 0.5], abs=1e-4)
    assert stats["correctness"] == pytest.approx([1.0, 0.5])
    assert cartography_variability(logits, labels=labels)[1] > cartography_variability(
        logits, labels=labels)[0]


def test_forgetting_counts_transitions_and_never_learnt_is_maximal():
    # correctness over 6 epochs: learnt and kept / learnt, forgotten twice / never learnt
    pattern = np.array([[0, 1, 1, 1, 1, 1], [1, 0, 1, 0, 1, 1], [0, 0, 0, 0, 0, 0]], bool)
    logits = np.zeros((6, 3, 2))
    logits[..., 0] = np.where(pattern.T, 1.0, -1.0)
    events = forgetting_events(logits, labels=np.zeros(3, dtype=int))
    assert events.tolist() == [0.0, 2.0, 6.0]


def test_aum_is_the_mean_negative_margin():
    logits = np.array([[[3.0, 1.0, 0.0]], [[1.0, 2.0, 0.0]]])      # margins 2 and -1
    assert aum(logits, labels=np.array([0])) == pytest.approx([-0.5])


def test_aum_until_the_milestone_keeps_the_memorised_labels_hard():
    # 10 epochs, a learning-rate drop after epoch 5: the mislabelled samples (first 10)
    # lose on their label before it and are memorised with large margins after it, while
    # the clean ones keep a modest margin throughout
    n, bad = 40, np.arange(40) < 10
    margin = np.where(bad[None, :], -1.0, 1.0) * np.ones((10, 1))
    margin[5:, bad] = 8.0
    logits = np.zeros((10, n, 2))
    logits[..., 0] = margin                     # label 0 for every sample
    labels = np.zeros(n, dtype=int)
    assert auroc(aum(logits, labels=labels), bad) == 0.0          # averaged over all epochs
    assert auroc(aum(logits, labels=labels, until=5), bad) == 1.0
    assert aum(logits, labels=labels, until=5) == pytest.approx(-margin[:5].mean(axis=0))
    assert np.array_equal(aum(logits, labels=labels, until=99), aum(logits, labels=labels))
    with pytest.raises(ValueError, match="until must be >= 1"):
        aum(logits, labels=labels, until=0)


def test_trajectory_scores_check_shapes():
    with pytest.raises(ValueError, match="T >= 1 epochs"):
        aum(np.zeros((5, 3)), labels=np.zeros(5, dtype=int))
    with pytest.raises(ValueError, match="labels must have shape"):
        aum(np.zeros((2, 5, 3)), labels=np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match="lie in"):
        aum(np.zeros((2, 5, 3)), labels=np.full(5, 3))


def test_confident_learning_finds_flipped_labels():
    rng = np.random.default_rng(0)
    n, classes = 300, 3
    true = rng.integers(0, classes, n)
    probs = np.full((n, classes), 0.05)
    probs[np.arange(n), true] = 0.9
    probs += rng.uniform(0, 0.05, probs.shape)
    probs /= probs.sum(axis=1, keepdims=True)
    given = true.copy()
    flipped = rng.choice(n, 30, replace=False)
    given[flipped] = (true[flipped] + 1) % classes
    bad = np.zeros(n, dtype=bool)
    bad[flipped] = True
    for method in ("self_confidence", "normalized_margin", "confidence_weighted_entropy"):
        assert auroc(label_issue_score(probs, labels=given, method=method), bad) == 1.0
    assert np.array_equal(label_issues(probs, labels=given), bad)
    with pytest.raises(ValueError, match="valid methods"):
        label_issue_score(probs, labels=given, method="nope")
    with pytest.raises(ValueError, match="sum to 1"):
        label_issue_score(probs * 2, labels=given)
