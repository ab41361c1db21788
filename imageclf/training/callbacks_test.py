import pytest
import torch

from imageclf.recipes.schema import EarlyStopping, ReduceLROnPlateau
from imageclf.training.callbacks import EarlyStopper, ModelEma, PlateauReducer, schedule_factor


def test_early_stopping_counts_epochs_without_improvement():
    es = EarlyStopper(EarlyStopping(monitor="val_loss", patience=2))
    assert [es.update({"val_loss": v}) for v in (1.0, 0.9, 0.95, 0.91)] == [False, False, False, True]


def test_early_stopping_maximises_accuracy():
    es = EarlyStopper(EarlyStopping(monitor="val_accuracy", patience=1))
    assert es.update({"val_accuracy": 0.5}) is False
    assert es.update({"val_accuracy": 0.6}) is False
    assert es.update({"val_accuracy": 0.55}) is True


def test_reduce_lr_like_keras():
    pr = PlateauReducer(ReduceLROnPlateau(patience=2, factor=0.3, min_lr=1e-4), base_lr=1e-3)
    seq = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    reduced = [pr.update({"val_loss": v}) for v in seq]
    assert reduced == [False, False, True, False, True, False, False]
    assert pr.factor * 1e-3 == pytest.approx(1e-4)  # floored at min_lr


def test_state_round_trip():
    pr = PlateauReducer(ReduceLROnPlateau(), 1e-3)
    pr.update({"val_loss": 1.0})
    other = PlateauReducer(ReduceLROnPlateau(), 1e-3)
    other.load_state_dict(pr.state_dict())
    assert other.state_dict() == pr.state_dict()


@pytest.mark.parametrize("name", ["constant", "cosine", "onecycle"])
def test_schedules(name):
    values = [schedule_factor(name, t / 100, 0.1) for t in range(101)]
    assert all(0 <= v <= 1.0 + 1e-9 for v in values)
    if name != "constant":
        assert values[-1] < 0.01 and max(values) == pytest.approx(1.0, abs=0.05)
        assert values[1] < values[9]  # warm-up rises


def test_ema_moves_towards_weights():
    model = torch.nn.Linear(2, 1)
    ema = ModelEma(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(1.0)
    for _ in range(200):
        ema.update(model)
    assert torch.allclose(ema.shadow["weight"], torch.ones(1, 2), atol=1e-3)
