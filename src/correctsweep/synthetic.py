"""Synthetic facial-expression images: the package's built-in default dataset.

The project needs a dataset that ships with the code (no downloads, no licences)
yet behaves like a small facial-expression benchmark, so the CNN -> LSTM ->
attention classifier has something non-trivial to learn and a sweep has
something non-trivial to measure.

Each image is a cartoon face drawn from signed-distance masks on a pixel grid.
The expression is carried by FACS-like cues -- brow height and slant, eye
openness, mouth shape, nose wrinkles, and skin folds that spread it over the
face (forehead lines, lines between the brows, nasolabial folds, raised
cheeks) -- scaled by a random per-image intensity in [0.6, 1], so every image
shows its expression clearly enough for the base net to learn it from a few
thousand images. Everything else is nuisance variation a classifier has to
learn to ignore: face shape, skin tone, hair, age (faint folds at rest), pose
(offset, scale, in-plane rotation), lighting, background texture, mild blur,
sensor noise and occluders (a bar such as glasses, or a hand, on ~10 % of
faces). Pairs that are hard in real data are hard here too: fear and surprise
share raised brows, wide eyes and an open mouth, disgust and anger share
lowered brows, narrowed eyes and lines between the brows, and sadness differs
from neutral by a few small cues that resting faces partly mimic.

Labels use RAF-DB numbering (1 Surprise, 2 Fear, 3 Disgust, 4 Happiness,
5 Sadness, 6 Anger, 7 Neutral) and class sizes follow RAF-DB basic.
"""

import heapq
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

VERSION = 2  # bump when the rendering changes, so cached datasets are regenerated
RAFDB_BASIC_COUNTS = {1: 1620, 2: 357, 3: 880, 4: 5961, 5: 2465, 6: 873, 7: 3211}

# Full-intensity deviations from a neutral face; each image scales a row by its
# intensity. brow: raise of the whole brow; inner: extra raise of the inner end
# (negative pulls it down into a frown); arch: extra bow; eye: relative change of
# eye opening; width: relative change of mouth width; corner: mouth corners
# drop (+ down, - up); up/lo: opening of the upper/lower lip at the centre;
# sneer: one-sided raise of the upper lip; teeth: fraction of the opening showing
# upper teeth; lips: relative change of lip thickness; wrinkle: nose wrinkles.
# The remaining cues are strengths of skin folds that spread an expression over
# the whole face rather than a few pixels: lines: full-width forehead lines
# (whole brow raised, AU1+2); worry: short lines over the inner brows (AU1);
# glabella: vertical lines between the brows (AU4); fold: nasolabial folds from
# the nose to the mouth corners; cheek: raised, flushed cheeks (AU6).
_FIELDS = ("brow", "inner", "arch", "eye", "width", "corner", "up", "lo",
           "sneer", "teeth", "lips", "wrinkle", "lines", "worry", "glabella", "fold", "cheek")
_EXPRESSIONS = np.array([
    # brow  inner  arch   eye  width corner   up     lo  sneer teeth  lips wrinkle lines worry glab fold cheek
    [0.16,  0.00, 0.06,  0.90, -0.35, 0.00, 0.070, 0.120, 0.00, 0.0,  0.0, 0.0,   1.0, 0.0, 0.0, 0.0, 0.0],  # surprise
    [0.10,  0.08, -0.03, 0.80,  0.25, 0.04, 0.030, 0.070, 0.00, 0.4,  0.0, 0.0,   0.0, 1.0, 0.5, 0.0, 0.0],  # fear
    [-0.06, -0.04, 0.00, -0.45, -0.05, 0.04, 0.010, 0.000, 0.08, 0.6,  0.0, 1.0,   0.0, 0.0, 0.6, 1.0, 0.0],  # disgust
    [0.02,  0.00, 0.00, -0.30, 0.35, -0.14, 0.000, 0.070, 0.00, 0.6,  0.0, 0.0,   0.0, 0.0, 0.0, 0.8, 1.0],  # happiness
    [-0.01, 0.10, 0.00, -0.25, -0.10, 0.11, 0.000, 0.000, 0.00, 0.0,  0.0, 0.0,   0.0, 0.8, 0.0, 0.0, 0.0],  # sadness
    [-0.08, -0.12, 0.00, -0.50, -0.30, 0.02, 0.000, 0.000, 0.00, 0.0, -0.6, 0.0,   0.0, 0.0, 1.0, 0.0, 0.0],  # anger
    [0.00,  0.00, 0.00,  0.00,  0.00, 0.00, 0.000, 0.000, 0.00, 0.0,  0.0, 0.0,   0.0, 0.0, 0.0, 0.0, 0.0],  # neutral
])


def _label_schedule(n):
    # Huntington-Hill apportionment handed out one image at a time: every class
    # gets its first image before any class gets a second, each prefix has
    # counts proportional to RAF-DB, and growing n only appends labels -- so
    # generate(20) is exactly the first 20 images of generate(50).
    heap = [(-math.inf, -c, k) for k, c in RAFDB_BASIC_COUNTS.items()]
    heapq.heapify(heap)
    given = dict.fromkeys(RAFDB_BASIC_COUNTS, 0)
    labels = np.empty(n, dtype=np.int64)
    for i in range(n):
        _, tie, k = heapq.heappop(heap)
        labels[i] = k
        given[k] += 1
        s = given[k]
        heapq.heappush(heap, (-RAFDB_BASIC_COUNTS[k] / math.sqrt(s * (s + 1)), tie, k))
    return labels


def class_counts(n: int) -> dict[int, int]:
    """Per-class image counts for a dataset of ~n images, proportional to RAF-DB basic.

    Every class gets at least one image, and the counts sum to exactly n.
    """
    if n < len(RAFDB_BASIC_COUNTS):
        raise ValueError(f"need n >= {len(RAFDB_BASIC_COUNTS)} to give every class an image, got {n}")
    labels = _label_schedule(n)
    return {k: int((labels == k).sum()) for k in RAFDB_BASIC_COUNTS}


def _ellipse(u, v, cu, cv, a, b):
    # Approximate signed distance: exact on the axes, good enough for anti-aliasing.
    return (np.sqrt(((u - cu) / a) ** 2 + ((v - cv) / b) ** 2) - 1.0) * min(a, b)


def _box(u, v, cu, cv, a, b, angle):
    c, s = math.cos(angle), math.sin(angle)
    du, dv = u - cu, v - cv
    return np.maximum(np.abs(c * du + s * dv) - a, np.abs(c * dv - s * du) - b)


def _curve(u, v, u0, v0, u1, v1, bow):
    # Distance to a shallow stroke from (u0, v0) to (u1, v1), bowed upwards by
    # `bow` at its middle; vertical offset corrected for slope is accurate enough
    # for brows and wrinkles, which are never steep.
    uc = np.clip(u, u0, u1)
    s = (uc - u0) / (u1 - u0)
    f = v0 + (v1 - v0) * s - 4.0 * bow * s * (1.0 - s)
    return np.hypot(u - uc, (v - f) / math.hypot(1.0, (v1 - v0) / (u1 - u0)))


def _paint(canvas, dist, px, color, strength=1.0):
    # One pixel of linear falloff across the edge anti-aliases every shape.
    alpha = np.clip(0.5 - dist / px, 0.0, strength)
    color = np.asarray(color, dtype=np.float32)
    canvas += alpha * ((color[:, None, None] if color.ndim == 1 else color) - canvas)


class _Pose(NamedTuple):
    scale: float
    angle: float
    ox: float
    oy: float


def _expression(rng, label):
    """Cue strengths for one image: the label's row at a random intensity, plus resting-face jitter."""
    t = rng.uniform(0.6, 1.0)
    e = dict(zip(_FIELDS, t * _EXPRESSIONS[label - 1]))
    # Resting faces differ: a neutral mouth can sag or lift a little and brows
    # sit at different heights, which blurs weak expressions into neutral.
    e["brow"] += rng.normal(0.0, 0.02)
    e["inner"] += rng.normal(0.0, 0.02)
    e["corner"] += rng.normal(0.0, 0.02)
    return e


def _pose(rng, x, y):
    """Random pose and the face-local coordinates (u right, v down, face about 1.6 tall) of image points (x, y)."""
    # Modest, as in aligned face crops such as RAF-DB's.
    scale = rng.uniform(0.88, 1.06)
    angle = rng.uniform(-0.2, 0.2)
    ox, oy = rng.uniform(-0.07, 0.07, 2)
    c, s = math.cos(angle), math.sin(angle)
    u = (c * (x - ox) + s * (y - oy)) / scale
    v = (c * (y - oy) - s * (x - ox)) / scale
    return _Pose(scale, angle, ox, oy), u, v


def _background(rng, x, y):
    """A flat colour with two low-frequency ripples for texture."""
    canvas = np.empty((3,) + x.shape, dtype=np.float32)
    canvas[:] = rng.uniform(20, 230, (3, 1, 1))
    for _ in range(2):
        fx, fy = rng.uniform(-4.0, 4.0, 2)
        ripple = np.sin(math.pi * (fx * x + fy * y) + rng.uniform(0, 2 * math.pi))
        canvas += rng.uniform(-25, 25, (3, 1, 1)) * ripple
    return canvas


def _palette(rng):
    """Skin and hair colours, each float64 RGB."""
    skin = np.array([235.0, 200.0, 175.0]) + rng.uniform(0, 1) * np.array([-140.0, -140.0, -130.0])
    skin *= rng.uniform(0.93, 1.07, 3)
    # Squared so that most hair is dark and light hair is the minority.
    hair = np.array([20.0, 15.0, 12.0]) + rng.uniform(0, 1) ** 2 * np.array([180.0, 145.0, 90.0])
    return skin, hair


def _head(rng, canvas, u, v, px, skin, hair):
    """Neck, hair and the face oval, painted back to front."""
    ax, ay = rng.uniform(0.58, 0.70), rng.uniform(0.76, 0.86)
    neck = _box(u, v, 0.0, 1.2, ax * 0.4, 0.6, 0.0)
    _paint(canvas, neck, px, skin * 0.8)
    hair_a, hair_b = ax * rng.uniform(1.05, 1.2), ay * rng.uniform(0.85, 1.0)
    _paint(canvas, _ellipse(u, v, 0.0, -0.15, hair_a, hair_b), px, hair)
    # Darken the rim of the face so it reads as round rather than flat.
    rim = ((u / ax) ** 2 + (v / ay) ** 2) * 0.2
    _paint(canvas, _ellipse(u, v, 0.0, 0.0, ax, ay), px, skin[:, None, None] * (1.0 - rim))


def _feature_window(pose, size):
    """Image rows and columns (as slices) covering the face-local box that holds eyes, brows, nose and mouth.

    Drawing the features on this window instead of the whole image saves most of the rendering time.
    """
    c, s = math.cos(pose.angle), math.sin(pose.angle)
    box_u, box_v = np.array([-0.5, 0.5, -0.5, 0.5]), np.array([-0.6, -0.6, 0.7, 0.7])
    cols = (pose.ox + pose.scale * (c * box_u - s * box_v) + 1.0) * size / 2.0
    rows = (pose.oy + pose.scale * (s * box_u + c * box_v) + 1.0) * size / 2.0
    return (slice(max(0, int(rows.min())), int(rows.max()) + 1),
            slice(max(0, int(cols.min())), int(cols.max()) + 1))


@dataclass
class _Face:
    """The face being painted: the feature window's pixels and face-local coordinates, and what every
    feature's drawing reads."""

    rng: np.random.Generator
    pixels: np.ndarray
    """float [3, h, w]: a view of the canvas, so painting it paints the image."""
    u: np.ndarray
    v: np.ndarray
    px: float
    """One pixel in face-local units: the anti-aliasing width."""
    e: dict
    """The expression's parameters (_expression)."""
    skin: np.ndarray
    hair: np.ndarray
    crease: np.ndarray
    """The colour of lines and folds."""


def _eyes(f: _Face):
    """Paints both eyes; returns their centre (ex, ey) on the right side and half-width ew."""
    rng, face, u, v, px, e = f.rng, f.pixels, f.u, f.v, f.px, f.e
    # Drawn on |u| so one mask serves both eyes; the iris keeps its size while
    # the lids open or close, so wide eyes show white above and below it.
    ex, ey = rng.uniform(0.22, 0.28), rng.uniform(-0.12, -0.05)
    ew = rng.uniform(0.11, 0.13)
    eh = max(0.014, 0.055 * (1.0 + e["eye"]) * rng.uniform(0.85, 1.15))
    iris_r = rng.uniform(0.04, 0.048)
    gaze = rng.normal(0.0, 0.012)
    eye = _ellipse(np.abs(u), v, ex, ey, ew, eh)
    iris = np.maximum(_ellipse(np.abs(u - gaze), v, ex, ey, iris_r, iris_r), eye)
    pupil = np.maximum(_ellipse(np.abs(u - gaze), v, ex, ey, iris_r * 0.45, iris_r * 0.45), eye)
    _paint(face, eye - 0.012, px, [35.0, 25.0, 25.0])
    _paint(face, eye, px, [238.0, 236.0, 228.0])
    _paint(face, iris, px, rng.uniform([40, 30, 15], [110, 120, 150]))
    _paint(face, pupil, px, [10.0, 10.0, 10.0])
    return ex, ey, ew


def _brows(f: _Face, ex, ey, ew):
    """Paints both brows above the eyes; returns the height vb of their outer ends."""
    rng, face, u, v, px, e, skin, hair = f.rng, f.pixels, f.u, f.v, f.px, f.e, f.skin, f.hair
    vb = ey - rng.uniform(0.11, 0.14) - e["brow"]
    brow = _curve(np.abs(u), v, ex - ew, vb - e["inner"], ex + ew * 1.2, vb,
                  rng.uniform(0.0, 0.02) + e["arch"])
    # Faint brows on some faces, as with light hair or poor contrast.
    _paint(face, brow - rng.uniform(0.025, 0.035), px, np.minimum(hair, skin * 0.4), rng.uniform(0.75, 1.0))
    return vb


def _upper_folds(f: _Face, ey, vb):
    """Forehead lines, lines between the brows and raised cheeks; returns the face's age in [0, 0.3]."""
    rng, face, u, v, px, e, skin, crease = f.rng, f.pixels, f.u, f.v, f.px, f.e, f.skin, f.crease
    # Older faces show faint folds at rest, so a weak expression on them reads
    # much like a neutral one.
    age = rng.uniform(0.0, 0.3)
    for k in range(3):
        lv = vb - 0.07 - 0.04 * k
        line = _curve(u, v, -0.22 + 0.02 * k, lv, 0.22 - 0.02 * k, lv, 0.015)
        _paint(face, line - 0.01, px, crease, min(1.0, e["lines"] + age))
        worry = _curve(u, v, -0.1, lv + 0.01, 0.1, lv + 0.01, 0.02)
        _paint(face, worry - 0.01, px, crease, min(1.0, e["worry"]))
    glabella = _box(np.abs(u), v, 0.035, vb + 0.03, 0.006, 0.045, 0.15)
    _paint(face, glabella, px, crease, min(1.0, e["glabella"]))
    cheek = _ellipse(np.abs(u), v, 0.27, ey + 0.17, 0.1, 0.065)
    _paint(face, cheek, px, np.minimum(skin * [1.15, 0.95, 0.95] + [30.0, 0.0, 0.0], 255.0), 0.7 * min(1.0, e["cheek"]))
    return age


def _nose(f: _Face, ey):
    """Nostrils, a faint bridge line and nose wrinkles; returns the nostrils' height ny."""
    rng, face, u, v, px, e, crease = f.rng, f.pixels, f.u, f.v, f.px, f.e, f.crease
    ny = rng.uniform(0.19, 0.25)
    _paint(face, _ellipse(np.abs(u), v, 0.045, ny, 0.024, 0.014), px, crease)
    _paint(face, _curve(u, v, 0.03, ey + 0.05, 0.05, ny - 0.04, 0.0) - 0.006, px, crease, 0.4)
    for k in range(3 if e["wrinkle"] > 0 else 0):
        wrinkle = _curve(u, v, -0.06, ey + 0.03 + 0.035 * k, 0.06, ey + 0.03 + 0.035 * k, 0.012)
        _paint(face, wrinkle - 0.009, px, crease, min(1.0, e["wrinkle"]))
    return ny


def _mouth(f: _Face, ny, age):
    """Mouth, lips and teeth, and the nasolabial folds, which run from the nose to the mouth's corners."""
    rng, face, u, v, px, e, skin, crease = f.rng, f.pixels, f.u, f.v, f.px, f.e, f.skin, f.crease
    # The mouth is the region between two lip lines that meet at the corners; a
    # closed mouth is the zero-opening case, so every expression morphs from neutral.
    mc, mw = rng.uniform(0.4, 0.46), rng.uniform(0.18, 0.22) * (1.0 + e["width"])
    q = np.clip(u / mw, -1.0, 1.0)
    bulge = np.sqrt(1.0 - q * q)
    mid = mc + e["corner"] * q * q + rng.normal(0.0, 0.01) * q
    side = rng.choice([-1.0, 1.0])
    upper = mid - (e["up"] + e["sneer"] * (1.0 + side * q) / 2.0) * bulge
    lower = mid + e["lo"] * bulge
    mouth = np.maximum(np.abs(u) - mw, np.maximum(upper - v, v - lower))
    fold = _curve(np.abs(u), v, 0.07, ny + 0.01, mw + 0.05, mc + 0.04, -0.01)
    _paint(face, fold - 0.011, px, crease, min(1.0, e["fold"] + age))
    lips = rng.uniform(0.022, 0.03) * (1.0 + e["lips"])
    _paint(face, mouth - lips, px, skin * [0.75, 0.5, 0.5] + [40.0, 0.0, 5.0])
    _paint(face, mouth, px, [50.0, 15.0, 20.0])
    teeth = np.maximum(mouth, v - upper - e["teeth"] * (lower - upper))
    _paint(face, teeth, px, [235.0, 230.0, 215.0], float(e["teeth"] > 0))


def _occluder(rng, canvas, u, v, px, skin):
    """On ~10 % of faces, a bar (glasses, a strap, a held object) or a hand anywhere on the image."""
    if rng.uniform() < 0.1:
        cu, cv = rng.uniform(-0.4, 0.4), rng.uniform(-0.3, 0.5)
        if rng.uniform() < 0.5:
            a, b, turn = rng.uniform(0.3, 0.7), rng.uniform(0.05, 0.12), rng.uniform(-0.4, 0.4)
            bar = _box(u, v, cu, cv, a, b, turn)
            _paint(canvas, bar, px, rng.uniform(0, 255, 3))
        else:
            hand = _ellipse(u, v, cu, cv, rng.uniform(0.15, 0.28), rng.uniform(0.2, 0.35))
            _paint(canvas, hand, px, skin * rng.choice([0.75, 1.25]))


def _camera(rng, canvas, x, y):
    """Lighting, blur and sensor noise, then quantisation to uint8."""
    tilt = rng.uniform(0, 2 * math.pi)
    gradient = math.cos(tilt) * x + math.sin(tilt) * y
    canvas *= rng.uniform(0.8, 1.1) * (1.0 + rng.uniform(0, 0.3) * gradient)
    # Slightly out-of-focus or upscaled faces: blend part of the way towards a
    # 3x3 box blur, which softens thin cues such as teeth and wrinkles.
    size = canvas.shape[-1]
    padded = np.pad(canvas, ((0, 0), (1, 1), (1, 1)), mode="edge")
    blurred = sum(padded[:, i:i + size, j:j + size] for i in range(3) for j in range(3)) / 9.0
    canvas += rng.uniform(0.0, 0.3) * (blurred - canvas)
    canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * rng.uniform(1, 6)
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8)


def _render(rng, label, size):
    """One face showing expression `label` (1..7), as uint8 [3, size, size] RGB.

    The helpers are called, and draw from `rng`, in a fixed order: changing either
    changes every image, so it needs a VERSION bump.
    """
    e = _expression(rng, label)
    # Pixel centres on [-1, 1], so every size draws the same face at its own resolution.
    grid = (np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size) - 1.0
    y, x = np.meshgrid(grid, grid, indexing="ij")
    pose, u, v = _pose(rng, x, y)
    px = 2.0 / size / pose.scale
    canvas = _background(rng, x, y)
    skin, hair = _palette(rng)
    _head(rng, canvas, u, v, px, skin, hair)

    win = _feature_window(pose, size)
    face = _Face(rng, canvas[(slice(None),) + win], u[win], v[win], px, e, skin, hair, skin * 0.55)
    ex, ey, ew = _eyes(face)
    vb = _brows(face, ex, ey, ew)
    age = _upper_folds(face, ey, vb)
    ny = _nose(face, ey)
    _mouth(face, ny, age)

    _occluder(rng, canvas, u, v, px, skin)
    return _camera(rng, canvas, x, y)


def generate(n: int, image_size: int = 100, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Returns (images uint8 [n, 3, image_size, image_size] RGB, labels int64 [n] in 1..7)."""
    labels = _label_schedule(n)
    images = np.empty((n, 3, image_size, image_size), dtype=np.uint8)
    for i, label in enumerate(labels):
        # One seed per image: image i never depends on n or on the images after it.
        rng = np.random.default_rng(np.random.SeedSequence([seed, i]))
        images[i] = _render(rng, int(label), image_size)
    return images, labels
