"""`correctsweep export RUN_DIR --fold J --onnx DIR`: a fold's corrected classifier as an ONNX pair.

    f.onnx         uint8 images [N, C, S, S] -> f's masked logits [N, K] and `features` [N, d]: the taps g
                   reads, pooled as `features.pool_taps` pools them and stacked in g's order (one nn.Module
                   around BaseNet, so the graph's output is exactly g's input)
    g.onnx         `features` -> g's probabilities [N, K] (columns in the classes' order), the compact-
                   embedding projection included: the kind's model gives its own graph (Model.to_onnx:
                   XGBoost through onnxmltools, the linear kinds as small graphs in float64, as numpy
                   computes them), the projection is a small graph built here
    manifest.json  taps and their pooling, the projection, policy, tau, classes and names, input size and
                   channels, and the graphs' input and output names

h is then: pred_f = classes[argmax(logits)], and the policy on g's probabilities (`policy.apply_policy`);
`OnnxPair` does that with onnxruntime. Images are decoded and resized as `predict` does (`data.resize`).
Needs the optional packages of the `export` extra (onnx, onnxruntime, onnxmltools, onnxscript).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from correctsweep.atomic import atomic_dir, write_json
from correctsweep.entry import load_corrected
from correctsweep.errors import CorrectsweepError
from correctsweep.features import pool_taps
from correctsweep.nets import BaseNet
from correctsweep.onnxgraph import OPSET, OnnxNodes, cast, const, node
from correctsweep.outputs import check_folder
from correctsweep.policy import apply_policy
from correctsweep.predict import CorrectedClassifier, Outputs

F_OPSET = 18  # torch.onnx's dynamo exporter writes 18 or later
NEEDS = "correctsweep export needs the export extra: pip install 'correctsweep[export]' (onnx, onnxruntime, " \
        "onnxmltools, onnxscript)"


class FeatureNet(nn.Module):
    """f as g reads it: the masked logits and g's input, the chosen taps pooled and stacked. The net reads
    every tap the features file holds, as extraction did (see `predict`), though g uses some."""

    def __init__(self, net: BaseNet, extracted: list[str], taps: list[str]):
        super().__init__()
        self.net, self.extracted, self.taps = net, extracted, taps

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        masked, raw = self.net.forward_taps(x, self.extracted)
        pooled = pool_taps(raw, masked, self.taps, False, self.net.excluded_index, self.net.pooling)
        return masked, torch.cat([pooled[t].float() for t in self.taps], dim=1)


def _pooling(net: BaseNet, name: str, raw: torch.Tensor) -> str:
    """How a tap became its columns of g's input, in words (features.pool_taps)."""
    if name == "logits":
        return "raw logits, the excluded class's column NaN"
    if name == "softmax":
        return "softmax of the masked logits"
    if name in net.pooling:
        return "the net's own pooling"
    return {2: "as is", 3: "mean then max over positions"}.get(raw.dim(), "mean then max over space")


def export_f(clf: CorrectedClassifier, path: Path) -> list[dict]:
    """Write f.onnx; returns each tap's name, pooling and width in g's input."""
    taps = clf.selection.record.taps
    module = FeatureNet(clf.net.cpu().eval(), clf.extracted, taps).eval()
    x = torch.zeros(2, clf.channels, clf.image_size, clf.image_size, dtype=torch.uint8)
    with torch.no_grad():
        masked, raw = clf.net.forward_taps(x, clf.extracted)
        pooled = pool_taps(raw, masked, taps, False, clf.net.excluded_index, clf.net.pooling)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            # torch.export's notes on its own internals (deprecations, the LSTM's flat weights) and the
            # exporter's progress lines: nothing a user of the command can act on
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (x,), str(path), input_names=["images"], output_names=["logits", "features"],
                              dynamic_shapes=({0: torch.export.Dim("batch")},), opset_version=F_OPSET, dynamo=True,
                              external_data=False)
    clf.net.to(clf.device)
    return [{"name": t, "pooling": _pooling(clf.net, t, raw[t] if t in raw else masked),
             "width": int(pooled[t].shape[1])} for t in taps]


def _projection_nodes(projection, source: str, target: str) -> OnnxNodes:
    """(x[:, columns] - shift) @ basis in float64, as Projection.transform, cast back to float32."""
    nodes = [cast(source, "p.x", "float64"), node("Gather", ["p.x", "p.columns"], ["p.kept"], axis=1),
             node("Sub", ["p.kept", "p.shift"], ["p.centred"]), node("MatMul", ["p.centred", "p.basis"], ["p.out"]),
             cast("p.out", target, "float32")]
    return OnnxNodes(nodes, [const("p.columns", projection.columns.astype(np.int64)),
                             const("p.shift", projection.shift.astype(np.float64)),
                             const("p.basis", projection.basis.astype(np.float64))])


def export_g(clf: CorrectedClassifier, path: Path, width: int) -> dict:
    """Write g.onnx (`features` -> `probabilities`): the projection, if any, then the kind's own graph;
    returns its input and output names and dtype."""
    import onnx
    from onnx import TensorProto, helper

    to_onnx = getattr(clf.corrector, "to_onnx", None)
    if to_onnx is None:
        raise CorrectsweepError(f"the {clf.selection.record.kind} corrector cannot be exported: its model has no "
                                "to_onnx (see docs/extending.md)")
    pieces = [_projection_nodes(clf.projection, "features", "projected")] if clf.projection is not None else []
    pieces.append(to_onnx("projected" if pieces else "features", "probabilities"))
    g = pieces[-1]
    dtype = TensorProto.DOUBLE if g.dtype == "float64" else TensorProto.FLOAT
    opsets = {"": OPSET} | {domain: v for piece in pieces for domain, v in piece.opsets.items()}
    graph = helper.make_graph([n for piece in pieces for n in piece.nodes], "g",
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, width])],
                              [helper.make_tensor_value_info("probabilities", dtype, [None, len(clf.classes)])],
                              [c for piece in pieces for c in piece.initializers])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return {"input": "features", "output": "probabilities", "output_dtype": g.dtype}


def require_packages() -> None:
    """A one-line error naming the extra to install when the ONNX packages are missing."""
    try:
        import onnx  # noqa: F401
        import onnxmltools  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise CorrectsweepError(NEEDS) from None


def export_onnx(clf: CorrectedClassifier, folder: Path) -> Path:
    """Write f.onnx, g.onnx and manifest.json into `folder` (replaced whole, only once all three are written;
    see check_folder); for a run from a features table, g.onnx and manifest.json."""
    require_packages()
    folder = check_folder(folder, clf.selection.run_dir)
    sel, record = clf.selection, clf.selection.record
    table = sel.net_dir is None  # a run from a features table: f is not ours to export, g alone is
    with atomic_dir(folder) as tmp:
        taps = [{"name": t, "pooling": "as the table gives it (logits: the excluded class's column NaN)",
                 "width": w} for t, w in clf.tap_widths().items()] if table else export_f(clf, tmp / "f.onnx")
        g = export_g(clf, tmp / "g.onnx", sum(t["width"] for t in taps))
        p = clf.projection
        image_input = {"channels": clf.channels, "image_size": clf.image_size, "dtype": "uint8",
                       "layout": "[N, C, H, W], pixels 0..255",
                       "resize": "antialiased bilinear to image_size x image_size, rounded (data.resize)",
                       "channel_mapping": "grayscale images for 1 channel, RGB for 3 (data.decode)"}
        write_json(tmp / "manifest.json", {
            "run": str(sel.run_dir), "fold": sel.fold, "seed": sel.seed, "kind": record.kind,
            "classes": record.classes, "class_names": sel.class_names, "excluded": sel.excluded,
            # null where no tau certified (h = f): JSON has no infinity
            "policy": record.policy, "tau": record.tau if math.isfinite(record.tau) else None,
            "certificate": None if record.certificate is None else asdict(record.certificate) | {
                "tau": record.tau if math.isfinite(record.tau) else None},
            "input": {"features": "each row's taps below, float32, stacked in their order; pred_f from the row's "
                      "pred_f or the argmax of its logits with the excluded class masked"} if table else image_input,
            "f": None if table else {
                "file": "f.onnx", "input": "images", "outputs": {"logits": "logits", "features": "features"},
                "logits": "masked: the excluded class's is -inf, so argmax is f's class index"},
            "g": {"file": "g.onnx"} | g,
            "taps": taps,
            "projection": None if p is None else {
                "dims": p.dims, "inside": "g.onnx", "formula": "(features[:, columns] - shift) @ basis"},
            "h": (f"pred_f = classes[argmax(logits)]; {record.policy} with tau {record.tau} on g's probabilities "
                  "(override: switch to argmax p if it differs from pred_f and p >= tau; new_class: switch to "
                  "the excluded class if its p >= tau)") if math.isfinite(record.tau) else
                 "h = pred_f = classes[argmax(logits)]: no tau certified corrector.max_harm, so g changes nothing"})
    return folder


class OnnxPair:
    """h run by onnxruntime from an exported folder: the check that the pair agrees with `predict`."""

    def __init__(self, folder: str | Path, threads: int | None = None):
        import onnxruntime as ort

        folder = Path(folder)
        self.manifest = json.loads((folder / "manifest.json").read_text())
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        load = lambda name: ort.InferenceSession(str(folder / name), options, providers=["CPUExecutionProvider"])
        self.f, self.g = load("f.onnx"), load("g.onnx")

    def run(self, images: np.ndarray) -> Outputs:
        """h on uint8 images [N, C, S, S] at the manifest's size."""
        m = self.manifest
        logits, features = self.f.run(["logits", "features"], {"images": np.ascontiguousarray(images)})
        proba = self.g.run(["probabilities"], {"features": features})[0]
        pred_f = np.asarray(m["classes"])[logits.argmax(1)]
        tau = math.inf if m["tau"] is None else m["tau"]
        return Outputs(pred_f, apply_policy(proba, pred_f, m["classes"], m["policy"], tau, m["excluded"]), proba)


def main(args) -> None:
    """The export sub-command (cli.py parses its arguments)."""
    require_packages()
    clf = load_corrected(args.run_dir, args.fold, args.seed, args.kind, "cpu")
    folder = export_onnx(clf, Path(args.onnx))
    files = "g.onnx and manifest.json" if clf.selection.net_dir is None else "f.onnx, g.onnx and manifest.json"
    print(f"{folder}: {files} for fold {clf.selection.fold} seed {clf.selection.seed} "
          f"({clf.selection.record.kind} corrector)")
