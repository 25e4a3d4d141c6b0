"""The trainer's recipe options (base_net.schedule, ema_decay, mixup/cutmix, RandAugment): each does what its
docstring says, and each is off by default without drawing a random number."""
import numpy as np
import pytest
import torch

from correctsweep import nets
from correctsweep.config import BaseNetConfig, spec_from_dict
from correctsweep.errors import SpecError
from correctsweep.recipe import mix, randaugment
from correctsweep.train import TrainSet, _optimiser, ema_update, train_base_net


def _fold(n=64, size=24, classes=3, channels=1):
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g)
    targets = np.arange(n) % classes
    return TrainSet(images, targets, np.arange(0, n - 16), np.arange(n - 16, n), classes)


def _lrs(cfg, steps_per_epoch=10):
    torch.manual_seed(0)
    optimizer, schedule = _optimiser(nets.build(cfg, 3), cfg, steps_per_epoch)
    out = []
    for _ in range(cfg.epochs * steps_per_epoch):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return np.array(out)


def test_one_cycle_rises_to_the_peak_lr_then_anneals_far_below_it():
    lrs = _lrs(BaseNetConfig(epochs=10, lr=1e-2, schedule="one_cycle"))
    assert lrs[0] == pytest.approx(1e-2 / 25)
    assert lrs.max() == pytest.approx(1e-2, rel=1e-3) and 25 <= lrs.argmax() <= 35  # 30 % of 100 steps
    assert lrs[-1] < 1e-5
    cosine = _lrs(BaseNetConfig(epochs=10, lr=1e-2))  # today's: warm-up over 1 epoch, then cosine
    assert cosine.argmax() == 9 and cosine[0] == pytest.approx(1e-3)


def test_the_weights_average_warms_up_then_decays_at_ema_decay():
    update, averaged = ema_update(0.9), [torch.zeros(2)]
    kept = 1.0
    for n in range(1, 40):
        update(averaged, [torch.ones(2)], torch.tensor(n))
        kept *= min(0.9, (1 + n) / (10 + n))  # the share of the starting weights the average still holds
        assert torch.allclose(averaged[0], torch.full((2,), 1 - kept))
    assert kept < 1e-3  # 0.9 from the 80th update on; before it, the warm-up forgets the start faster


def test_the_weights_average_is_what_is_validated_and_kept(monkeypatch):
    import correctsweep.train as train

    original, made = train._averaged, []

    def recording(model, cfg):
        made.append(original(model, cfg))
        return made[-1]

    monkeypatch.setattr(train, "_averaged", recording)
    data = _fold(n=40)
    cfg = BaseNetConfig(epochs=1, batch_size=8, lr=1e-2, device="cpu", ema_decay=0.999)
    kept, result = train_base_net(data, cfg, seed=0)
    (average,) = made
    assert all(torch.equal(v, average.module.state_dict()[k]) for k, v in kept.state_dict().items())
    plain, _ = train_base_net(data, BaseNetConfig(**(vars(cfg) | {"ema_decay": 0.0})), seed=0)
    assert not all(torch.equal(v, plain.state_dict()[k]) for k, v in kept.state_dict().items())
    x_val, y_val = data.images[torch.from_numpy(data.val_idx)], torch.from_numpy(data.targets[data.val_idx])
    validated = (train.predict(average.module, x_val, torch.device("cpu")) == y_val).float().mean().item()
    assert result.val_accuracy == pytest.approx(validated)


def test_mixup_blends_images_and_labels_by_one_share():
    x = torch.randint(0, 256, (16, 1, 8, 8), dtype=torch.uint8)
    mixed = mix(x, BaseNetConfig(mixup_alpha=0.4), np.random.default_rng(0))
    assert 0 < mixed.lam < 1 and sorted(mixed.partner.tolist()) == list(range(16))
    assert torch.allclose(mixed.x, mixed.lam * x.float() + (1 - mixed.lam) * x[mixed.partner].float())
    y, logits = torch.arange(16) % 3, torch.randn(16, 3)
    ce = torch.nn.functional.cross_entropy
    assert torch.allclose(mixed.loss(ce, logits, y),
                          mixed.lam * ce(logits, y) + (1 - mixed.lam) * ce(logits, y[mixed.partner]))


def test_cutmix_pastes_a_box_and_mixes_labels_by_its_area():
    x = torch.zeros(4, 1, 10, 10, dtype=torch.uint8)
    x[1:] = 255  # image 0 black, the others white
    checked = 0
    for seed in range(20):
        mixed = mix(x, BaseNetConfig(cutmix_alpha=1.0), np.random.default_rng(seed))
        assert mixed.x.dtype == torch.uint8
        pasted = (mixed.x != x).float().mean(dim=(1, 2, 3))  # share of each image that changed
        changes = mixed.partner != torch.arange(4)
        crossed = changes & ((x[mixed.partner] != x).flatten(1).any(1))  # a partner of the other colour
        assert torch.allclose(pasted[crossed], torch.full_like(pasted[crossed], 1 - mixed.lam))
        checked += int(crossed.sum())
    assert checked > 10


def test_mixing_is_off_by_default_and_then_draws_nothing():
    rng = np.random.default_rng(0)
    before = rng.bit_generator.state
    x = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    assert mix(x, BaseNetConfig(), rng) is None and rng.bit_generator.state == before
    assert mix(x, BaseNetConfig(mixup_alpha=1.0, mix_probability=0.0), rng) is None


@pytest.mark.parametrize("channels", [1, 3])
def test_randaugment_keeps_uint8_batches_and_draws_per_group(channels):
    torch.manual_seed(0)
    x = torch.randint(0, 256, (32, channels, 24, 24), dtype=torch.uint8)
    out = randaugment(x, BaseNetConfig(randaugment_ops=2, randaugment_magnitude=15))
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert not torch.equal(out, x)
    torch.manual_seed(0)
    x2 = torch.randint(0, 256, (32, channels, 24, 24), dtype=torch.uint8)
    assert torch.equal(randaugment(x2, BaseNetConfig(randaugment_ops=2, randaugment_magnitude=15)), out)  # seeded


def test_every_option_at_once_trains_a_finite_net():
    cfg = BaseNetConfig(epochs=2, batch_size=8, device="cpu", schedule="one_cycle", ema_decay=0.9, mixup_alpha=0.2,
                        cutmix_alpha=1.0, mix_probability=0.8, randaugment_ops=2, augment=True)
    model, result = train_base_net(_fold(channels=3), cfg, seed=0)
    assert result.epochs_run == 2 and all(np.isfinite(h["train_loss"]) for h in result.history)
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())


@pytest.mark.parametrize("key, value", [("schedule", "linear"), ("ema_decay", 1.0), ("mixup_alpha", -1),
                                        ("mix_probability", 1.5), ("randaugment_ops", -1),
                                        ("randaugment_magnitude", 31)])
def test_bad_recipe_values_name_the_key(key, value):
    with pytest.raises(SpecError, match=f"base_net.{key}"):
        spec_from_dict({"base_net": {key: value}})
