"""Shared agent machinery (agents/base.py): the predicted label of a score row, with the original's tie order in
reference (``topk(1)``, the original's utils/metric.py) and argmax in corrected."""
from __future__ import annotations

import math

import pytest
import torch

from augmem.agents import get_agent_class
from augmem.train.fidelity import train_switches

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NAN = math.nan
SCORES = torch.tensor([
    [0.0, 0.0, 0.0, 0.0],      # all tied (a dead network: every output 0)
    [1.0, 3.0, 3.0, 0.0],      # two tied maxima
    [NAN, 1.0, NAN, 2.0],      # NaN scores (a diverged network)
    [NAN, NAN, NAN, NAN],
    [0.5, 0.1, 0.9, 0.2],      # no tie
])


def make_agent(fidelity: str):
    torch.manual_seed(0)
    hp = {"backbone": "squeezenet", "weights": "none", "image_size": 32, "lr": 0.01}
    agent = get_agent_class("NormalNN")(6, hp, train_switches(fidelity))
    agent.set_active([0, 1, 4, 5])  # labels need not be contiguous for the mapping back to labels
    return agent


@pytest.mark.parametrize("fidelity", ["reference", "corrected"])
def test_pick_labels_tie_order(fidelity):
    agent = make_agent(fidelity)
    active = torch.tensor([0, 1, 4, 5])
    got = agent.pick_labels(SCORES)
    if fidelity == "reference":
        expected = active[SCORES.topk(1, 1, True, True).indices[:, 0]]
    else:
        expected = active[SCORES.argmax(1)]
    assert torch.equal(got, expected)
    assert got[4] == 4  # no tie: both agree
    # on this build the two rules disagree on at least one tied / NaN row (else the switch would be untestable)
    assert not torch.equal(active[SCORES.topk(1, 1, True, True).indices[:, 0]], active[SCORES.argmax(1)])


@pytest.mark.parametrize("fidelity", ["reference", "corrected"])
def test_predict_on_a_dead_network_uses_the_tie_order(fidelity):
    """A head with zero weights gives all-zero scores: the prediction is the tie order's choice, not always the
    first active class."""
    agent = make_agent(fidelity)
    with torch.no_grad():
        for p in agent.model[1].parameters():
            p.zero_()
    x = torch.randn(3, 3, 32, 32)
    pred = agent.predict(x)["acc"]
    zeros = torch.zeros(3, 4)
    active = torch.tensor([0, 1, 4, 5])
    rule = zeros.topk(1, 1, True, True).indices[:, 0] if fidelity == "reference" else zeros.argmax(1)
    assert torch.equal(pred, active[rule])
