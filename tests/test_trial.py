"""The real entry point on a tiny budget: one fold end to end, then the stage cache."""
import duckdb
import pyarrow.dataset as pads
import torch

from correctsweep import nets
from correctsweep.cli import main
from correctsweep.config import BaseNetConfig


def test_base_net_shapes():
    net = nets.build(BaseNetConfig(), 7, excluded_index=2)  # the paper net's default settings
    logits, taps = net.forward_taps(torch.zeros(2, 1, 100, 100, dtype=torch.uint8), list(net.body.TAPS))
    assert logits.shape == (2, 7) and torch.isinf(logits[:, 2]).all()
    assert taps["conv"].shape == (2, 128, 12, 12) and taps["lstm"].shape == (2, 144, 128)
    assert taps["attn_weights"].shape == (2, 144, 144) and taps["fc"].shape == (2, 128)


def test_trial_writes_features_and_a_rerun_reuses_them(tiny_copy, capsys):
    """The tiny run's features (its sweep's trials wrote them), then `correctsweep trial` on the run again."""
    root = tiny_copy / "features"
    table = pads.dataset(root, format="parquet", partitioning="hive").to_table().to_pandas()
    assert {"sample_id", "label", "pred_f", "conv", "lstm", "attn", "attn_weights", "fc", "logits",
            "softmax"} <= set(table.columns)
    test = table[(table.fold.astype(str) == "3") & (table.split == "test")]
    assert (test.label == 3).any() and not (table[table.fold.astype(str) == "3"].pred_f == 3).any()
    n = duckdb.sql(f"select count(*) from read_parquet('{root}/**/*.parquet', hive_partitioning=1)").fetchall()[0][0]
    assert n == len(table)
    capsys.readouterr()
    assert main(["trial", str(tiny_copy / "spec.yaml"), "--fold", "3"]) == 0
    out = capsys.readouterr().out
    assert "reusing trained base net" in out and "training base net" not in out and "wrote" not in out


def test_bad_input_exits_nonzero_with_one_line(tmp_path, capsys):
    assert main(["data", "sweeps/smoke.yaml", "--set", "data.sorce=x"]) == 2
    err = capsys.readouterr().err.strip()
    assert "data.sorce" in err and len(err.splitlines()) == 1
    assert main(["trial", "sweeps/smoke.yaml", "--fold", "9", "--set", f"storage={tmp_path}"]) == 2


def test_net_key_follows_the_dataset(monkeypatch):
    from correctsweep import synthetic
    from correctsweep.config import load_spec
    from correctsweep.trial import net_key

    spec = load_spec("sweeps/smoke.yaml")
    before = net_key(spec, "3", 0)
    assert net_key(spec, "3", 0) == before and net_key(spec, "3", 1) != before
    monkeypatch.setattr(synthetic, "VERSION", synthetic.VERSION + 1)  # a regenerated default set
    assert net_key(spec, "3", 0) != before


def test_early_stopping_waits_for_min_epochs():
    import numpy as np

    from correctsweep.config import BaseNetConfig
    from correctsweep.train import TrainSet, train_base_net

    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 255, (40, 3, 16, 16), dtype=np.uint8))
    targets = np.arange(40) % 3  # noise: validation accuracy cannot keep improving
    idx = np.arange(40)
    runs = {m: train_base_net(TrainSet(images, targets, idx[:30], idx[30:], 3),
                              BaseNetConfig(epochs=6, patience=1, min_epochs=m, batch_size=10, device="cpu"), 0)[1]
            for m in (0, 6)}
    assert runs[0].epochs_run < 6 and runs[6].epochs_run == 6
    assert runs[6].history[runs[6].best_epoch - 1]["val_accuracy"] == max(h["val_accuracy"] for h in runs[6].history)
