"""Latent features e(x): the trained net's intermediate representations, written as Parquet.

One Hive-partitioned dataset per run: features/fold=J/seed=S/split=X/part-<features key>.parquet (see
`layout`), keyed by `trial.features_key`: the trained model's key, the taps and features.full.
Each row is one image: sample_id, label
(true), pred_f (the base net's prediction, both the dataset's labels) and one fixed-size float list
per tap. Each tap is pooled by its shape: maps [B, C, H, W] to the mean and max over space, sequences
[B, T, D] to the mean and max over T, vectors as they are (a net may pool a tap its own way: the paper
net's attention weights), and `features.full` keeps the whole maps too. The schema metadata (key
b"correctsweep") holds the class names, the excluded class, the spec and the SHA-256 of the model
weights, so pandas, pyarrow or DuckDB users need no project code to make sense of a file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from correctsweep.atomic import atomic_path
from correctsweep.nets import BaseNet

META_KEY = b"correctsweep"


@dataclass
class FeatureSet:
    """One split's features in memory: what the corrector consumes."""

    sample_ids: np.ndarray
    """str [n]."""
    labels: np.ndarray
    """int64 [n], true labels."""
    pred_f: np.ndarray
    """int64 [n], the base net's predictions."""
    taps: dict[str, np.ndarray]
    """tap name -> float32 [n, d]."""
    meta: dict
    """The file's metadata: classes, class_names, excluded, weights_sha256, spec, tap_dims."""

    def rows(self, index: np.ndarray) -> FeatureSet:
        """These rows of the set, in `index` order."""
        return FeatureSet(self.sample_ids[index], self.labels[index], self.pred_f[index],
                          {name: values[index] for name, values in self.taps.items()}, self.meta)


@torch.no_grad()
def extract(model: BaseNet, images: torch.Tensor, taps: list[str], full: bool, batch_size: int,
            device: torch.device) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Run the net over `images` (uint8 [n, C, S, S]); returns (predicted class index, tap arrays)."""
    model.eval().to(device)
    preds, out = [], {}
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(device, non_blocking=True)
        masked, raw = model.forward_taps(x, taps)
        preds.append(masked.argmax(1).cpu())
        for name, value in pool_taps(raw, masked, taps, full, model.excluded_index, model.pooling).items():
            out.setdefault(name, []).append(value.float().cpu())
    return torch.cat(preds).numpy(), {k: torch.cat(v).numpy() for k, v in out.items()}


def pool(value: torch.Tensor) -> torch.Tensor:
    """A tap as one vector per image, by its shape: [B, C, H, W] -> mean and max over space, [B, T, D] ->
    mean and max over T, [B, D] as it is (wider maps are flattened to [B, C, positions] first)."""
    if value.dim() == 1:
        return value[:, None]
    if value.dim() == 2:
        return value
    seq = value.flatten(2).transpose(1, 2) if value.dim() >= 4 else value  # [B, positions, channels]
    return torch.cat([seq.mean(1), seq.amax(1)], dim=1)


def pool_taps(raw: dict[str, torch.Tensor], masked_logits: torch.Tensor, taps: list[str], full: bool,
              excluded_index: int | None, pooling: dict | None = None) -> dict[str, torch.Tensor]:
    """Flat per-image vectors of each tap: [B, d]."""
    out = {}
    for name in taps:
        if name == "logits":
            logits = raw["logits"].float().clone()
            if excluded_index is not None:  # never trained: missing, which XGBoost handles natively
                logits[:, excluded_index] = float("nan")
            out[name] = logits
        elif name == "softmax":
            out[name] = torch.softmax(masked_logits.float(), dim=1)
        else:
            value = raw[name]
            out[name] = (pooling or {}).get(name, pool)(value)
            if full and value.dim() > 2:
                out[f"{name}_full"] = value.flatten(1)
    return out


def write_split(path: Path, ids: np.ndarray, labels: np.ndarray, pred_f: np.ndarray,
                taps: dict[str, np.ndarray], meta: dict) -> None:
    """Write one split's features atomically (temp file, then rename)."""
    columns = {"sample_id": pa.array(ids.astype(str)), "label": pa.array(labels.astype(np.int16)),
               "pred_f": pa.array(pred_f.astype(np.int16))}
    for name, values in taps.items():
        values = np.ascontiguousarray(values, dtype=np.float32)
        columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])
    meta = meta | {"tap_dims": {k: int(v.shape[1]) for k, v in taps.items()}}
    table = pa.table(columns).replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_meta(path: str | Path) -> dict:
    """A split file's metadata alone (`FeatureSet.meta`), from its footer; {} where it has none."""
    return json.loads((pq.read_schema(path).metadata or {}).get(META_KEY, b"{}"))


def read_split(path: str | Path) -> FeatureSet:
    """Read one split file (or a folder of them with one net) written by `write_split`."""
    table = pq.read_table(path)
    meta = read_meta(path)
    taps = {}
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_fixed_size_list(col.type) or pa.types.is_list(col.type):
            flat = col.combine_chunks()
            width = flat.type.list_size if pa.types.is_fixed_size_list(flat.type) else len(flat[0])
            taps[name] = flat.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, width)
    return FeatureSet(np.asarray(table.column("sample_id").to_pylist()),
                      table.column("label").to_numpy().astype(np.int64),
                      table.column("pred_f").to_numpy().astype(np.int64), taps, meta)


def file_meta(classes: list[int], class_names: dict[int, str], excluded: int | None, spec: dict,
              weights_sha256: str, net_key: str) -> dict:
    return {"classes": classes, "class_names": [class_names[c] for c in classes], "excluded": excluded,
            "weights_sha256": weights_sha256, "net_key": net_key, "spec": spec}
