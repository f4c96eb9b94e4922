"""NaiveRehearsal (spec 6.3, 12.21): reference = NormalNN exactly (dead learn_stream); corrected = reservoir memory
of memory_size images, memory_size // task_count per task, replayed in alternation with the stream batches."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.data import DataLoader

from augmem.agents.naive_rehearsal import NaiveRehearsal, TaskMemory
from augmem.agents.normal_nn import NormalNN
from augmem.train.fidelity import train_switches
from augmem.train.seeding import DEFAULT_REPLAY_SEED, replay_random, set_replay_seed

HP = {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4, "memory_size": 10, "batch_size": 8}


def small_net():
    front = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.ReLU())
    back = nn.Sequential(nn.Dropout(0.5), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 4))
    return nn.Sequential(front, back)


class TinyNormal(NormalNN):
    def build_model(self):
        return small_net()


class TinyRehearsal(NaiveRehearsal):
    def build_model(self):
        return small_net()


def run(agent, tasks, n_epoch=2, batch=8):
    active = []
    for t, ds in enumerate(tasks):
        active = sorted(set(active) | set(ds.tensors[1].tolist()))
        agent.set_active(active)
        for e in range(n_epoch):
            agent.learn_stream(DataLoader(ds, batch_size=batch), t, e, e == n_epoch - 1)


def test_reference_trains_exactly_like_normal_nn(tiny_stream):
    tasks, _ = tiny_stream
    torch.manual_seed(3)
    base = TinyNormal(4, {k: v for k, v in HP.items() if k != "memory_size"}, train_switches("reference"))
    run(base, tasks)
    torch.manual_seed(3)
    reh = TinyRehearsal(4, dict(HP), train_switches("reference"))
    run(reh, tasks)
    for k, v in base.model.state_dict().items():
        assert torch.equal(v, reh.model.state_dict()[k]), k
    assert reh.memory_bytes() == {"images": 0}
    assert len(reh.memory) == 0


def test_corrected_memory_holds_the_budget(tiny_stream):
    tasks, _ = tiny_stream
    torch.manual_seed(0)
    a = TinyRehearsal(4, dict(HP), train_switches("corrected"))
    run(a, tasks[:1])
    assert len(a.memory) == 10 and a.memory.task_count == 1
    a.set_active([0, 1, 2, 3])
    for e in range(2):
        a.learn_stream(DataLoader(tasks[1], batch_size=8), 1, e, e == 1)
    assert [len(y) for y in a.memory.y] == [5, 5]  # memory_size // 2 per task
    assert len(a.memory) <= HP["memory_size"]
    assert a.memory_bytes() == {"images": 10 * 3 * 32 * 32}
    # stored items are real items of their task, with their labels
    for t, (mx, my) in enumerate(zip(a.memory.x, a.memory.y)):
        tx, ty = tasks[t].tensors
        for xi, yi in zip(mx, my):
            hit = (tx == xi).flatten(1).all(1).nonzero()
            assert len(hit) >= 1 and int(ty[hit[0, 0]]) == int(yi)
        assert set(my.tolist()) <= set(ty.tolist())


def test_corrected_alternates_train_and_replay_batches(tiny_stream):
    tasks, _ = tiny_stream
    torch.manual_seed(0)
    a = TinyRehearsal(4, dict(HP), train_switches("corrected"))
    run(a, tasks[:1], n_epoch=1)
    seen = []
    orig = a.update_model

    def spy(x, y):
        seen.append(sorted(set(y.tolist())) + [len(y)])
        return orig(x, y)

    a.update_model = spy
    a.set_active([0, 1, 2, 3])
    a.learn_stream(DataLoader(tasks[1], batch_size=8), 1, 0, True)
    n_train_batches = math.ceil(len(tasks[1]) / 8)
    replay_batch = math.ceil(10 / n_train_batches)
    assert len(seen) == 2 * n_train_batches
    for i, labels in enumerate(seen):
        if i % 2 == 0:  # stream batch of task 1
            assert set(labels[:-1]) <= {2, 3} and labels[-1] == 8
        else:  # replay batch from the memory of task 0
            assert set(labels[:-1]) <= {0, 1} and labels[-1] <= replay_batch
    assert sum(s[-1] for s in seen[1::2]) >= 10  # every stored item replayed in the epoch


def test_checkpoint_round_trip(tiny_stream, tmp_path):
    tasks, _ = tiny_stream
    torch.manual_seed(0)
    a = TinyRehearsal(4, dict(HP), train_switches("corrected"))
    run(a, tasks[:1], n_epoch=1)
    torch.save(a.checkpoint_state(), tmp_path / "ck.pt")
    b = TinyRehearsal(4, dict(HP), train_switches("corrected"))
    b.load_checkpoint_state(torch.load(tmp_path / "ck.pt", weights_only=True))
    assert b.memory.task_count == 1
    assert torch.equal(torch.cat(a.memory.x), torch.cat(b.memory.x))
    assert torch.equal(torch.cat(a.memory.y), torch.cat(b.memory.y))
    assert a.memory_bytes() == b.memory_bytes()


def test_reservoir_draws_from_the_replay_rng(tiny_stream):
    """The reservoir draws from the agent's replay generator, not the global RNG: the same replay seed gives the same
    memory whatever the global RNG did; without the loop the agent uses DEFAULT_REPLAY_SEED."""
    tasks, _ = tiny_stream
    torch.manual_seed(0)
    a = TinyRehearsal(4, dict(HP), train_switches("corrected"))
    b = TinyRehearsal(4, dict(HP), train_switches("corrected"))
    assert replay_random(a).seed == DEFAULT_REPLAY_SEED
    before = torch.get_rng_state()
    a.add_task_to_memory(tasks[0])
    assert torch.equal(torch.get_rng_state(), before)
    torch.rand(5)  # the global RNG moves: no effect
    b.add_task_to_memory(tasks[0])
    assert torch.equal(a.memory.x[0], b.memory.x[0])
    set_replay_seed(b, 123)
    b.memory = TaskMemory(HP["memory_size"])
    b.add_task_to_memory(tasks[0])
    assert not torch.equal(a.memory.x[0], b.memory.x[0])


def test_replay_loader_shuffles_with_the_replay_rng(tiny_stream):
    """Corrected training of task 1: the replay batches follow the replay generator (state in the checkpoint)."""
    tasks, _ = tiny_stream
    seen = {}
    for name in ("a", "b"):
        torch.manual_seed(0)
        agent = TinyRehearsal(4, dict(HP), train_switches("corrected"))
        run(agent, tasks[:1], n_epoch=1)
        agent.set_active([0, 1, 2, 3])
        agent.model.eval()
        agent.update_model = lambda x, y, out=seen.setdefault(name, []): out.append(y.tolist())
        torch.manual_seed(1 if name == "a" else 2)  # different global RNG: the same replay batches
        agent.learn_stream(DataLoader(tasks[1], batch_size=8), 1, 0, False)
    assert seen["a"] == seen["b"]
