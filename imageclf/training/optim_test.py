import subprocess
import sys

import pytest
import torch
from torch import nn

from imageclf.recipes.schema import get_recipe
from imageclf.training.optim import build_optimizer, eager


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def _train(make_optimizer, steps: int = 20) -> tuple[list[torch.Tensor], dict]:
    """The parameters after ``steps`` steps of the optimiser ``make_optimizer(net)`` makes, and its
    state_dict (loaded back once)."""
    net = _net()
    opt = make_optimizer(net)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 3, (8,), generator=g)
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    state = opt.state_dict()
    opt.load_state_dict(state)
    return [p.detach().clone() for p in net.parameters()], state


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_fused_update_is_the_plain_one(optimizer):
    recipe = get_recipe("mnist-basic").override({"optimizer": optimizer, "lr": 0.01, "weight_decay": 0.01,
                                                 "optimizer_kwargs": {}})
    assert build_optimizer(recipe, _net()).defaults["fused"] is True
    plain = recipe.override({"optimizer_kwargs": {"foreach": False}})
    assert not build_optimizer(plain, _net()).defaults.get("fused")
    for a, b in zip(_train(lambda net: build_optimizer(recipe, net))[0],
                    _train(lambda net: build_optimizer(plain, net))[0]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_optimizers_without_a_fused_kernel_keep_theirs():
    recipe = get_recipe("catsdogs-2conv")  # Adadelta
    assert not build_optimizer(recipe, _net()).defaults.get("fused")


def test_fused_moments_restored_from_a_contiguous_checkpoint_pair_with_their_weights():
    # A checkpoint stores Adam's moments contiguous; a channels-last weight's fused update must
    # still see its own moments after match_state_layouts (unmatched, it differed by 0.16).
    from imageclf.training.checkpoint import match_state_layouts

    def adam(p):
        return build_optimizer(get_recipe("mnist-basic").override({"optimizer_kwargs": {}, "lr": 0.1}),
                               nn.ParameterList([p]))

    g = torch.Generator().manual_seed(0)
    p = nn.Parameter(torch.randn(4, 3, 3, 3, generator=g).to(memory_format=torch.channels_last))
    grads = [torch.randn(4, 3, 3, 3, generator=g).to(memory_format=torch.channels_last) for _ in range(2)]
    opt = adam(p)
    p.grad = grads[0]
    opt.step()
    saved = {"state": {0: {k: v.clone().contiguous() for k, v in opt.state_dict()["state"][0].items()}},
             "param_groups": opt.state_dict()["param_groups"]}
    start = p.detach().clone()
    p.grad = grads[1]
    opt.step()
    want = p.detach().clone()
    with torch.no_grad():
        p.copy_(start)
    resumed = adam(p)
    resumed.load_state_dict(saved)
    match_state_layouts(resumed)
    p.grad = grads[1]
    resumed.step()
    assert torch.equal(p.detach(), want)


@pytest.mark.parametrize("name, kwargs", [("Adam", {"fused": True}), ("Adam", {}), ("AdamW", {"fused": True}),
                                          ("SGD", {"momentum": 0.9, "nesterov": True}), ("RMSprop", {}),
                                          ("Adadelta", {})])
def test_eager_optimizer_updates_as_torch_own_to_the_bit(name, kwargs):
    cls = getattr(torch.optim, name)
    ours, our_state = _train(lambda net: eager(cls)(net.parameters(), lr=0.01, **kwargs))
    theirs, their_state = _train(lambda net: cls(net.parameters(), lr=0.01, **kwargs))
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    assert our_state["param_groups"] == their_state["param_groups"]
    assert isinstance(eager(cls)(_net().parameters(), lr=0.01), cls) and eager(cls) is eager(cls)


def test_training_optimizers_do_not_import_the_compiler():
    # A fresh process: this one may have torch._dynamo from another test.
    code = ("import sys, torch\n"
            "from imageclf.recipes.schema import get_recipe\n"
            "from imageclf.training.optim import OPTIMIZERS, build_optimizer\n"
            "net = torch.nn.Linear(4, 2)\n"
            "for name in OPTIMIZERS:\n"
            "    recipe = get_recipe('mnist-basic').override({'optimizer': name, 'optimizer_kwargs': {}})\n"
            "    opt = build_optimizer(recipe, net)\n"
            "    net(torch.randn(3, 4)).sum().backward(); opt.step(); opt.zero_grad()\n"
            "    opt.load_state_dict(opt.state_dict())\n"
            "print('torch._dynamo' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
