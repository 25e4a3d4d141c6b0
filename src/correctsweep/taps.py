"""`correctsweep taps SPEC`: the spec's net's tappable nodes, their shapes and pooled widths, the ones a
newcomer would pick first marked: the net's defaults, the layer before its classifier, and the output
of each of its top-level stages (layer1..layer4 of a ResNet, say)."""

from __future__ import annotations

import math

from correctsweep import nets
from correctsweep.config import Spec
from correctsweep.data import load_dataset
from correctsweep.layout import RunLayout


def pooled_width(shape: tuple[int, ...], name: str, pooling: dict) -> str:
    """How wide the tap is once pooled (features.pool): maps and sequences keep mean and max per channel."""
    if name in pooling:
        return "own pooling"
    if len(shape) <= 1:
        return str(shape[0] if shape else 1)
    channels = shape[0] if len(shape) >= 3 else shape[-1]
    return str(2 * channels)


def stage_ends(names: list[str]) -> set[str]:
    """The last node under each top-level prefix: where a stage of the net hands on its output."""
    last = {}
    for name in names:
        last[name.split(".")[0]] = name
    return set(last.values())


def tap_table(spec: Spec) -> str:
    ds = load_dataset(spec.data, cache_dir=RunLayout.cache_dir(spec))
    probe = nets.probe(spec.base_net, len(ds.classes), ds.images.shape[1], ds.images.shape[-1])
    net, names = probe.net, list(probe.shapes)
    defaults, feature = set(net.default_taps()), net.feature_tap()
    stages = stage_ends([n for n in names if n not in nets.DERIVED_TAPS])
    rows = []
    for name in names:
        shape = probe.shapes[name]
        notes = [note for note, on in (("default", name in defaults), ("before the classifier", name == feature),
                                       ("stage output", name in stages)) if on]
        rows.append((name, "x".join(map(str, shape)), pooled_width(shape, name, net.pooling), ", ".join(notes),
                     math.prod(shape)))
    width = max(len(r[0]) for r in rows)
    lines = [f"{spec.base_net.arch} on {ds.images.shape[1]}x{ds.images.shape[2]}x"
             f"{ds.images.shape[3]} images, K = {len(ds.classes)}: {len(rows)} taps (features.taps names them)",
             f"{'tap':<{width}}  {'shape per image':<16} {'pooled':>7}  notes"]
    for name, shape, pooled, notes, _ in rows:
        lines.append(f"{name:<{width}}  {shape:<16} {pooled:>7}  {notes}")
    return "\n".join(lines)
