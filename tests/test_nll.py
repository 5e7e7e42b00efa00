"""The meta-experience NLL term (MEL eq. 7) against values worked out by hand."""
from __future__ import annotations

import pytest
import torch

from mel.algos import NLL_COEF_MODES, calibrated_coef, nll_token_weights, sequence_nll

# Two experiences of 2 and 3 M tokens, left-padded to L = 3 (the pad column holds a value that must not count).
LOGPROBS = torch.tensor([[-100.0, -1.0, -3.0], [-0.5, -1.0, -1.5]])
MASK = torch.tensor([[0.0, 1.0, 1.0], [1.0, 1.0, 1.0]])


def test_sequence_nll_by_hand():
    # experience 0: (1 + 3) / 2 = 2; experience 1: (0.5 + 1 + 1.5) / 3 = 1
    assert sequence_nll(LOGPROBS, MASK).tolist() == pytest.approx([2.0, 1.0], abs=1e-7)


def test_sequence_nll_of_an_empty_experience_is_zero():
    assert sequence_nll(torch.tensor([[-5.0, -5.0]]), torch.zeros(1, 2)).tolist() == [0.0]


def test_nll_token_weights_by_hand():
    w = nll_token_weights(MASK, num_experiences=2)
    # each token weighs 1 / (its experience's length * number of experiences)
    expected = torch.tensor([[0.0, 0.25, 0.25], [1 / 6, 1 / 6, 1 / 6]])
    assert torch.allclose(w, expected, rtol=0, atol=1e-7)


def test_nll_weights_over_two_micro_batches_give_the_mean_of_token_means():
    """Experience 0 alone (trimmed to its 2 columns), then experience 1: the sum is (2 + 1) / 2 = 1.5."""
    first = -(LOGPROBS[:1, 1:] * nll_token_weights(MASK[:1, 1:], 2)).sum()
    second = -(LOGPROBS[1:] * nll_token_weights(MASK[1:], 2)).sum()
    assert first.item() == pytest.approx(1.0, abs=1e-7)
    assert second.item() == pytest.approx(0.5, abs=1e-7)
    assert (first + second).item() == pytest.approx(1.5, abs=1e-7)
    assert (first + second).item() == pytest.approx(sequence_nll(LOGPROBS, MASK).mean().item(), abs=1e-7)


def test_nll_is_not_a_token_mean_over_all_tokens():
    """Token-averaged per experience: (2 + 1) / 2 = 1.5, not the pooled 7 / 5 = 1.4."""
    pooled = -(LOGPROBS * MASK).sum() / MASK.sum()
    weighted = -(LOGPROBS * nll_token_weights(MASK, 2)).sum()
    assert pooled.item() == pytest.approx(1.4, abs=1e-6)
    assert weighted.item() == pytest.approx(1.5, abs=1e-6)


def test_calibrated_coef_by_hand():
    # lambda * 4 == 0.1 * 2  ->  lambda = 0.05
    assert calibrated_coef(2.0, 4.0, 0.1, fallback=0.004) == pytest.approx(0.05, rel=1e-12)
    assert calibrated_coef(3.0, 0.5, 0.2, fallback=0.004) == pytest.approx(1.2, rel=1e-12)


@pytest.mark.parametrize("rl,nll", [(0.0, 4.0), (2.0, 0.0), (0.0, 0.0)])
def test_calibrated_coef_falls_back_on_a_zero_gradient(rl, nll):
    assert calibrated_coef(rl, nll, 0.1, fallback=0.004) == 0.004


def test_coef_modes():
    assert NLL_COEF_MODES.get("fixed")(2.0, 4.0, 0.1, 0.7) == 0.7
    assert NLL_COEF_MODES.get("calibrated")(2.0, 4.0, 0.1, 0.7) == pytest.approx(0.05, rel=1e-12)
    assert NLL_COEF_MODES.get("calibrated")(0.0, 4.0, 0.1, 0.7) == 0.7
    with pytest.raises(KeyError, match="known: calibrated, fixed"):
        NLL_COEF_MODES.get("adaptive")
