import pytest
import torch
from torch import nn

from imageclf.recipes.schema import get_recipe
from imageclf.training.optim import build_optimizer


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def _train(recipe, steps: int = 20) -> list[torch.Tensor]:
    net = _net()
    opt = build_optimizer(recipe, net)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 3, (8,), generator=g)
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return [p.detach().clone() for p in net.parameters()]


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_fused_update_is_the_plain_one(optimizer):
    recipe = get_recipe("mnist-basic").override({"optimizer": optimizer, "lr": 0.01, "weight_decay": 0.01,
                                                 "optimizer_kwargs": {}})
    assert build_optimizer(recipe, _net()).defaults["fused"] is True
    plain = recipe.override({"optimizer_kwargs": {"foreach": False}})
    assert not build_optimizer(plain, _net()).defaults.get("fused")
    for a, b in zip(_train(recipe), _train(plain)):
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
