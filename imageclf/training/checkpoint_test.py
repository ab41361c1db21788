import torch
from safetensors.torch import load_file

from imageclf.modelfile.artifact import CHECKPOINT_FILE
from imageclf.training.checkpoint import load_checkpoint, save_checkpoint


def _save(tmp_path, model, extra):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    save_checkpoint(tmp_path, model=model, optimizer=opt.state_dict(), extra_tensors=extra, meta={"epoch": 3})
    return load_file(tmp_path / CHECKPOINT_FILE), load_checkpoint(tmp_path)


def test_a_group_equal_to_the_model_is_written_once_and_read_back_as_its_own_copy(tmp_path):
    model = {"w": torch.arange(6.0).reshape(2, 3), "n": torch.tensor(4)}
    best = {k: v.clone() for k, v in model.items()}
    rng = {"torch": torch.tensor([1, 2, 3], dtype=torch.uint8)}
    raw, (groups, _, meta) = _save(tmp_path, model, {"best": best, "rng": rng})
    assert not any(name.startswith("best/") for name in raw)  # stored once, under model/
    assert meta["epoch"] == 3 and "same_as" not in meta
    assert groups["best"].keys() == model.keys()
    assert all(torch.equal(groups["best"][k], model[k]) for k in model)
    groups["best"]["w"].add_(1)  # training on from it must not move the model's weights
    assert torch.equal(groups["model"]["w"], model["w"])


def test_groups_that_differ_in_a_value_or_a_dtype_are_each_written(tmp_path):
    model = {"w": torch.zeros(3)}
    moved = {"w": torch.tensor([0.0, 0.0, 1e-7])}
    as_double = {"w": torch.zeros(3, dtype=torch.float64)}
    raw, (groups, _, _) = _save(tmp_path, model, {"best": moved, "ema": as_double})
    assert {"model/w", "best/w", "ema/w"} <= raw.keys()
    assert torch.equal(groups["best"]["w"], moved["w"]) and groups["ema"]["w"].dtype == torch.float64
