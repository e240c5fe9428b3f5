"""The state read-out probe and the confidence intervals: an informative feature reads 100%, noise reads chance,
the shuffled-label control stays at chance, ranks merge exactly, intervals resample clips."""

import numpy as np
import pytest
import torch

from lightning_ssmvid.metrics.probe import StateProbe, fit_linear_probe
from lightning_ssmvid.metrics.stats import bootstrap_ci, t_interval

K, BINS = 8, (60, 240, 960)


def events(n: int, seed: int, informative: bool, offset: int = 0):
    """n events: colours balanced, gap bins cycling, 4 events per clip; features carry the colour or not."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % K
    features = torch.randn(n, 12, generator=g)
    if informative:  # the colour, linearly readable, plus noise
        features[:, :K] += 5 * torch.nn.functional.one_hot(labels, K)  # Bayes error ~0.3%
    return features, labels, torch.arange(n) % len(BINS), offset + torch.arange(n) // 4


def test_informative_state_reads_out_and_controls_stay_at_chance():
    probe = StateProbe(BINS, K, 12)
    probe.update(*events(800, 0, True), fit=True)
    probe.update(*events(480, 1, True, offset=1000), fit=False)
    out = probe.compute()
    for b in BINS:
        assert out[f"probe_recall_gap{b}"] > 0.95
        assert out[f"probe_recall_gap{b}_lo"] <= out[f"probe_recall_gap{b}"] <= out[f"probe_recall_gap{b}_hi"]
    assert abs(float(out["probe_chance"]) - 1 / K) < 0.02  # balanced colours: the majority rate is 1/K
    # binomial s.d. of 1/8 over 480 events is 0.015; 0.08 is > 5 s.d.
    assert abs(float(out["probe_shuffled"]) - 1 / K) < 0.08


def test_noise_reads_chance():
    probe = StateProbe(BINS, K, 12)
    probe.update(*events(800, 2, False), fit=True)
    probe.update(*events(480, 3, False, offset=1000), fit=False)
    out = probe.compute()
    assert abs(float(out["probe_recall"]) - 1 / K) < 0.08
    assert float(out["probe_train"]) > float(out["probe_recall"])  # it fits its own training events better


def test_two_ranks_merge_to_the_same_probe_as_one():
    fit, score = events(400, 4, True), events(200, 5, True, offset=1000)
    whole = StateProbe(BINS, K, 12)
    whole.update(*fit, fit=True)
    whole.update(*score, fit=False)
    ranks = [StateProbe(BINS, K, 12) for _ in range(2)]
    for r, probe in enumerate(ranks):  # clips dealt to ranks in turn, as the evaluation does
        for rows, is_fit in ((fit, True), (score, False)):
            mine = (rows[3] % 2) == r
            probe.update(*(x[mine] for x in rows), fit=is_fit)
    ranks[1].merge_state(ranks[0])  # rank 0's rows after rank 1's: the fit must not depend on the order
    merged, expected = ranks[1].compute(), whole.compute()
    for key in expected:
        torch.testing.assert_close(merged[key], expected[key], equal_nan=True)


def test_too_few_training_events_give_nan_not_an_error():
    probe = StateProbe(BINS, K, 12)
    probe.update(*events(4, 6, True), fit=False)
    assert torch.isnan(probe.compute()["probe_recall"])


def test_fit_linear_probe_separates_separable_classes():
    x = torch.tensor([[0.0, 1.0], [0.1, 0.9], [1.0, 0.0], [0.9, 0.1]])
    y = torch.tensor([0, 0, 1, 1])
    weight, bias = fit_linear_probe(x, y, 2)
    assert ((x.double() @ weight + bias).argmax(1) == y).all()


def test_bootstrap_resamples_clips_and_t_interval_over_seeds():
    clips, correct = np.repeat(np.arange(50), 4), np.tile([1, 1, 0, 0], 50)
    lo, hi = bootstrap_ci(clips, correct)
    assert lo == hi == 0.5  # every clip scores 1/2: resampling clips cannot move the mean
    clustered = np.repeat(np.arange(50) % 2, 4)  # whole clips right or wrong: a wide interval
    lo, hi = bootstrap_ci(clips, clustered)
    assert lo < 0.4 < 0.6 < hi and bootstrap_ci(clips, clustered) == (lo, hi)  # deterministic
    assert all(np.isnan(bootstrap_ci([], [])))
    mean, half = t_interval([0.2, 0.4, 0.6])
    assert mean == pytest.approx(0.4) and half == pytest.approx(4.303 * 0.2 / 3 ** 0.5, rel=1e-3)
    assert t_interval([0.3]) == (0.3, 0.0) and t_interval([None, float("nan")]) is None
