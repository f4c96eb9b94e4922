"""NormalNN (fine-tuning, spec 6.1): it learns the tiny stream and forgets task 0 in class-incremental training.

SqueezeNet's logits are post-ReLU. From a random init on 32x32 inputs a class logit can start "dead" (negative
for every image, so it never gets a gradient), which makes learning a coin toss per seed. The learning tests
therefore start the new head with a positive bias, so every logit is alive at the start: the test then checks the
agent's learning, not the init lottery.
"""
from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from augmem.agents import get_agent_class
from augmem.agents.normal_nn import NormalNN, OfflineNN
from augmem.train.fidelity import train_switches
from augmem.train.seeding import seed_everything

HP = {"optimizer": "Adam", "lr": 1e-3, "batch_size": 8, "weights": "none", "image_size": 32}
EPOCHS = 5


def make_agent(seed: int = 0, **hp) -> NormalNN:
    seed_everything(seed)
    agent = NormalNN(4, {**HP, **hp}, train_switches("reference"), "cpu")
    head = [m for m in agent.model.modules() if isinstance(m, nn.Conv2d)][-1]
    nn.init.constant_(head.bias, 1.0)
    return agent


def loader(ds, bs=8):
    return torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=False)


def acc_on(agent, test, labels) -> float:
    x, y = test.tensors
    mask = torch.isin(y, torch.tensor(labels))
    pred = agent.predict(x[mask])["acc"]
    return 100.0 * float((pred == y[mask]).float().mean())


def train_task(agent, ds, t, active):
    agent.set_active(active)
    for e in range(EPOCHS):
        agent.learn_stream(loader(ds), task=t, epoch=e, last_epoch=(e == EPOCHS - 1))


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # deterministic and fast enough for these tiny nets


@pytest.mark.parametrize("seed", [0, 1])
def test_learns_then_forgets(tiny_stream, seed):
    tasks, test = tiny_stream
    agent = make_agent(seed)
    train_task(agent, tasks[0], 0, [0, 1])
    after_t0 = acc_on(agent, test, [0, 1])
    assert after_t0 >= 90.0  # chance is 50 %
    train_task(agent, tasks[1], 1, [0, 1, 2, 3])
    after_t1 = acc_on(agent, test, [0, 1])
    assert after_t1 <= after_t0 - 40.0  # catastrophic forgetting of task 0 in class-incremental fine-tuning


def test_deterministic(tiny_stream):
    tasks, _ = tiny_stream
    states = []
    for _ in range(2):
        agent = make_agent(3)
        train_task(agent, tasks[0], 0, [0, 1])
        states.append(agent.model.state_dict())
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k


def test_predicts_only_active_nodes_and_masks_the_loss(tiny_stream):
    tasks, test = tiny_stream
    agent = make_agent(0, optimizer="SGD", lr=0.01)
    agent.set_active([0, 1])
    pred = agent.predict(test.tensors[0])["acc"]
    assert set(pred.tolist()) <= {0, 1}
    head = [m for m in agent.model.modules() if isinstance(m, nn.Conv2d)][-1]
    before = head.weight.detach().clone()
    agent.learn_stream(loader(tasks[0]), task=0, epoch=0, last_epoch=True)
    # CE over the active nodes only: the rows of inactive classes 2, 3 get no gradient (momentum-free first step
    # and zero weight decay keep them exactly in place)
    assert torch.equal(head.weight[2:], before[2:])
    assert not torch.equal(head.weight[:2], before[:2])


def test_evaluate_empty_loader_is_nan(tiny_stream):
    agent = make_agent(0)
    agent.set_active([0, 1])
    empty = torch.utils.data.TensorDataset(torch.zeros(0, 3, 32, 32), torch.zeros(0, dtype=torch.long))
    res = agent.evaluate(loader(empty))
    assert set(res) == {"acc"} and res["acc"] != res["acc"]


def test_checkpoint_state_round_trip_weights_only(tiny_stream):
    tasks, test = tiny_stream
    agent = make_agent(0)
    train_task(agent, tasks[0], 0, [0, 1])
    buf = io.BytesIO()
    torch.save(agent.checkpoint_state(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    other = make_agent(5)
    other.load_checkpoint_state(state)
    assert other.active == [0, 1]
    x = test.tensors[0]
    assert torch.equal(other.predict(x)["acc"], agent.predict(x)["acc"])
    # the optimiser state came along too: one more identical step keeps them identical
    xb, yb = tasks[1].tensors[0][:8], tasks[1].tensors[1][:8]
    agent.set_active([0, 1, 2, 3]), other.set_active([0, 1, 2, 3])
    torch.manual_seed(7)  # the dropout masks come from the global RNG
    agent.update_model(xb, yb)
    torch.manual_seed(7)
    other.update_model(xb, yb)
    for k, v in agent.model.state_dict().items():
        assert torch.equal(v, other.model.state_dict()[k]), k


def test_registry_and_offline_flag():
    assert get_agent_class("NormalNN") is NormalNN
    assert get_agent_class("Offline") is OfflineNN and OfflineNN.offline and not NormalNN.offline
    with pytest.raises(ValueError, match="unknown agent implementation"):
        get_agent_class("Nope")
