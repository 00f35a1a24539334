"""Spherical-harmonics shading -> a few real lights: the math, in plain Python (no bpy,
no numpy, so it runs in any Blender).

The fit's lighting (INTERFACE.md section 4) is a 9-term SH function of the world-space
normal n:  S(n) = sum_k c_k sh[k] P_k(n),  P = [1, x, y, z, xy, xz, yz, x²-y², 3z²-1],
and the rendered colour is albedo * S(n). Blender has no SH light, so the importer
approximates S by lights a user can edit:

    S(n) ≈ W + sum_i P_i * f(n·d_i; a_i)

- W (RGB) is a uniform world colour: a constant environment of radiance W lights an
  unoccluded Lambertian surface of albedo a to exactly a * W;
- each P_i f(n·d_i; a_i) is a sun from unit direction d_i with angular diameter a_i:
  f = max(0, n·d) for a small sun; a wide sun (a uniform disc of light, `cap_falloff`)
  falls off smoothly, and a 180° one gives exactly (1 + n·d)/2, pure bands 0 and 1.

Why this shape. Band 0 of S is the ambient term A = c0 sh[0]; band 1 is the linear term
L·n with L = c1 (sh[1], sh[2], sh[3]) (the basis is [1, x, y, z, ...], so the band-1
direction is (sh[1], sh[2], sh[3]) in world x, y, z). A clamped cosine has the SH expansion
max(0, n·d) = 1/4 + (1/2) n·d + (5/16) P2(n·d) + ... (Legendre P2(t) = (3t²-1)/2), so one
narrow sun with P = 2|L| along d = L/|L| plus W = A - P/4 reproduces bands 0 and 1 exactly
(`closed_form_rig`, the key light "from the first-order band"); its band-2 part and the
clamp are its error. `fit_lights` starts from that direction and minimises the weighted
squared error of the whole 9-term function over the normals the head shows: W, P_i >= 0 in
closed form for given suns, directions (and angular sizes) by a sphere search plus local
refinement, a key sun first and then a fill when it lowers the error by 5% or more. Given
the camera's direction, suns come only from within ~100 degrees of it (`MIN_FACING`): the
photo saw the front, behind the head the SH is extrapolation, and a sun fitted there lit
the head from behind (the astronaut's old free light: a blue key 160 degrees off the view);
a rim or side light the photo shows is still inside that range.

Light cannot be negative, so the target is the SH shading clipped at 0 (`displayable`):
fitted SH often goes negative where the photo did not constrain it (under the chin, the
back of the head), and no set of lights reproduces that. Normals are weighted by the
pixels they cover in the photo, the face (inside the landmarks) 4x more.

Measured (relative RMS, 2 suns, Cycles 5.0; see README.md and the tests): synthetic
test head 2.2% over the normals, 2.4% in a render; astronaut fits of the real backend 6-13%
on the head, 6-9% on the face, depending on how physical the fitted SH is; the one-sun
closed form is 5-10x worse. Blender 3.x's Cycles normalises wide suns differently (measured
in 3.4), so there the importer keeps suns narrow (soft=False).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations

PI = math.pi
SH_CONSTANTS = (
    1 / math.sqrt(4 * PI),
    (2 * PI / 3) * math.sqrt(3 / (4 * PI)),
    (2 * PI / 3) * math.sqrt(3 / (4 * PI)),
    (2 * PI / 3) * math.sqrt(3 / (4 * PI)),
    (PI / 4) * 3 * math.sqrt(5 / (12 * PI)),
    (PI / 4) * 3 * math.sqrt(5 / (12 * PI)),
    (PI / 4) * 3 * math.sqrt(5 / (12 * PI)),
    (PI / 4) * (3 / 2) * math.sqrt(5 / (12 * PI)),
    (PI / 4) * (1 / 2) * math.sqrt(5 / (4 * PI)),
)


def sh_basis(n):
    """Unit normal (x, y, z) -> the 9 weighted basis values c_k P_k(n)."""
    x, y, z = n
    p = (1.0, x, y, z, x * y, x * z, y * z, x * x - y * y, 3 * z * z - 1)
    return [c * v for c, v in zip(SH_CONSTANTS, p, strict=False)]


def sh_shade(n, sh):
    """Shading (r, g, b) of unit world normal n under sh (9 x 3)."""
    b = sh_basis(n)
    return tuple(sum(b[k] * sh[k][c] for k in range(9)) for c in range(3))


def displayable(rgb):
    """Shading that light can produce: negative SH values (where the fit was unconstrained,
    e.g. under the chin or at the back of the head) become 0."""
    return tuple(max(0.0, c) for c in rgb)


def normalize(v):
    length = math.sqrt(sum(x * x for x in v))
    if length == 0:
        return (0.0, 0.0, 1.0)
    return tuple(x / length for x in v)


def fibonacci_sphere(count: int):
    """count roughly uniform unit vectors."""
    golden = PI * (3 - math.sqrt(5))
    out = []
    for i in range(count):
        y = 1 - 2 * (i + 0.5) / count
        r = math.sqrt(max(0.0, 1 - y * y))
        out.append((math.cos(golden * i) * r, y, math.sin(golden * i) * r))
    return out


NARROW = math.radians(0.5)  # full angular diameter of a "hard" sun
WIDE = math.pi  # a hemisphere


def cap_falloff(cos: float, angle: float) -> float:
    """Irradiance from a uniform disc of light of angular diameter `angle` (a Blender sun),
    relative to its value at normal incidence, for a surface whose normal makes cos with
    the disc's axis. angle -> 0: max(0, cos); angle = pi: (1 + cos) / 2. (Sphere/disc light
    with horizon clipping, e.g. Lagarde & de Rousiers, Moving Frostbite to PBR, 2014.)"""
    cos = max(-1.0, min(1.0, cos))
    half = 0.5 * angle
    if half < 1e-4:
        return max(0.0, cos)
    s2 = math.sin(half) ** 2
    if cos * cos > s2:
        return max(0.0, cos)
    if half >= 0.5 * math.pi - 1e-9:
        return 0.5 * (1.0 + cos)
    sin = math.sqrt(1.0 - cos * cos)
    x = math.sqrt(1.0 / s2 - 1.0)
    y = max(-1.0, min(1.0, -x * cos / sin)) if sin > 0 else 0.0
    st = sin * math.sqrt(1.0 - y * y)
    return max(0.0, ((cos * math.acos(y) - x * st) * s2 + math.atan2(st, x)) / (math.pi * s2))


@dataclass
class Sun:
    direction: tuple  # unit vector from the surface toward the light, world (model) space
    colour: tuple  # RGB shading added at normal incidence (P_i)
    role: str = "key"
    angle: float = NARROW  # angular diameter (radians): wide suns give the soft SH falloff

    @property
    def intensity(self) -> float:
        return max(self.colour)


@dataclass
class LightRig:
    ambient: tuple  # RGB world colour W
    suns: list = field(default_factory=list)
    error: float = 0.0  # relative RMS error over the fitted normals
    closed_form_error: float = 0.0  # the same for the one-sun closed form (bands 0+1)

    def shade(self, n):
        out = list(self.ambient)
        for sun in self.suns:
            f = cap_falloff(sum(a * b for a, b in zip(n, sun.direction, strict=False)), sun.angle)
            for c in range(3):
                out[c] += sun.colour[c] * f
        return tuple(out)


def closed_form_rig(sh) -> LightRig:
    """Bands 0 and 1 exactly: W = A - P/4, one sun P = 2|L| along L (per colour, shared d)."""
    amb = [SH_CONSTANTS[0] * sh[0][c] for c in range(3)]
    lin = [[SH_CONSTANTS[1] * sh[1 + a][c] for a in range(3)] for c in range(3)]  # per colour, xyz
    lum = (0.2126, 0.7152, 0.0722)
    d = normalize([sum(lum[c] * lin[c][a] for c in range(3)) for a in range(3)])
    power = [max(0.0, 2 * sum(lin[c][a] * d[a] for a in range(3))) for c in range(3)]
    ambient = tuple(max(0.0, amb[c] - power[c] / 4) for c in range(3))
    return LightRig(ambient, [Sun(tuple(d), tuple(power), "key")] if max(power) > 0 else [])


def _solve(A, b):
    """Solve a small linear system (Gaussian elimination, partial pivoting); None if singular."""
    n = len(b)
    M = [list(A[i]) + [b[i]] for i in range(n)]
    for col in range(n):
        piv = max(range(col, n), key=lambda r: abs(M[r][col]))
        if abs(M[piv][col]) < 1e-12:
            return None
        M[col], M[piv] = M[piv], M[col]
        for r in range(n):
            if r != col:
                f = M[r][col] / M[col][col]
                for k in range(col, n + 1):
                    M[r][k] -= f * M[col][k]
    return [M[i][n] / M[i][i] for i in range(n)]


def _nnls_small(G, b, tt):
    """min x^T G x - 2 b^T x + tt with x >= 0, by trying every active set (n <= 3)."""
    n = len(b)
    best = (tt, [0.0] * n)
    for size in range(1, n + 1):
        for subset in combinations(range(n), size):
            sol = _solve([[G[i][j] for j in subset] for i in subset], [b[i] for i in subset])
            if sol is None or min(sol) < 0:
                continue
            x = [0.0] * n
            for i, v in zip(subset, sol, strict=False):
                x[i] = v
            err = tt - 2 * sum(b[i] * x[i] for i in range(n)) + sum(
                x[i] * G[i][j] * x[j] for i in range(n) for j in range(n))
            if err < best[0]:
                best = (err, x)
    return best


class _Problem:
    """Weighted least squares of the SH shading by W + sum_i P_i f_i over sample normals,
    with the dot products of feature columns cached (candidates reuse the fixed ones)."""

    def __init__(self, sh, normals, weights):
        self.normals = normals
        self.weights = weights
        self.targets = [displayable(sh_shade(n, sh)) for n in normals]
        self.wsum = sum(weights)
        self.tt = [sum(w * t[c] * t[c] for w, t in zip(weights, self.targets, strict=False)) for c in range(3)]
        self.bt = [sum(w * t[c] for w, t in zip(weights, self.targets, strict=False)) for c in range(3)]
        self._stats = {}  # key -> (column, sum w f, [sum w f t_c])
        self._cross = {}

    def feature(self, d, angle):
        key = (round(d[0], 12), round(d[1], 12), round(d[2], 12), round(angle, 12))
        if key not in self._stats:
            dx, dy, dz = d
            if angle <= NARROW + 1e-12:
                col = [max(0.0, n[0] * dx + n[1] * dy + n[2] * dz) for n in self.normals]
            else:
                col = [cap_falloff(n[0] * dx + n[1] * dy + n[2] * dz, angle) for n in self.normals]
            wf = [a * b for a, b in zip(self.weights, col, strict=False)]
            self._stats[key] = (wf, col, sum(wf), [sum(a * t[c] for a, t in zip(wf, self.targets, strict=False)) for c in range(3)])
            if len(self._stats) > 4000:  # keep memory bounded during long searches
                self._stats = {key: self._stats[key]}
                self._cross.clear()
        return key

    def _dot(self, a, b):
        k = (a, b) if a <= b else (b, a)
        if k not in self._cross:
            self._cross[k] = sum(x * y for x, y in zip(self._stats[a][0], self._stats[b][1], strict=False))
        return self._cross[k]

    def solve(self, keys):
        """Best W, P_i >= 0 for the given features; returns (error, W, [P_i])."""
        m = len(keys) + 1
        G = [[0.0] * m for _ in range(m)]
        G[0][0] = self.wsum
        for i, ki in enumerate(keys, start=1):
            G[0][i] = G[i][0] = self._stats[ki][2]
            for j in range(i, m):
                G[i][j] = G[j][i] = self._dot(ki, keys[j - 1])
        total, amb, powers = 0.0, [], [[] for _ in keys]
        for c in range(3):
            b = [self.bt[c]] + [self._stats[k][3][c] for k in keys]
            err, x = _nnls_small(G, b, self.tt[c])
            total += err
            amb.append(x[0])
            for i in range(len(keys)):
                powers[i].append(x[i + 1])
        return total, amb, powers


def _refine(problem, suns, index, error, step=0.25, min_step=0.01, soft=True, allowed=None):
    """Local search on suns[index] = (direction, angle), the others fixed; directions stay
    where `allowed(d)` (default: anywhere)."""
    d, angle = suns[index]
    others = [problem.feature(*s) for j, s in enumerate(suns) if j != index]
    a_step = 0.35 if soft else 0.0
    while step > min_step:
        helper = (1.0, 0.0, 0.0) if abs(d[0]) < 0.9 else (0.0, 1.0, 0.0)
        t1 = normalize(_cross(d, helper))
        t2 = _cross(d, t1)
        moves = [(normalize([d[k] + step * (a * t1[k] + b * t2[k]) for k in range(3)]), angle)
                 for a, b in ((1, 0), (-1, 0), (0, 1), (0, -1))]
        if soft:
            moves += [(d, min(WIDE, max(NARROW, angle + s * a_step))) for s in (1, -1)]
        improved = False
        for cand in moves:
            if allowed is not None and not allowed(cand[0]):
                continue
            keys = list(others)
            keys.insert(index, problem.feature(*cand))
            err = problem.solve(keys)[0]
            if err < error - 1e-12:
                error, (d, angle), improved = err, cand, True
                break
        if not improved:
            step *= 0.5
            a_step *= 0.5
    suns[index] = (d, angle)
    return error


def _cross(a, b):
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def rig_error(rig: LightRig, sh, normals, weights=None) -> float:
    """Relative RMS error sqrt(sum w |rig - S+|² / sum w |S+|²) over the normals, where S+ is
    the SH shading with negative values clipped (`displayable`)."""
    weights = weights or [1.0] * len(normals)
    num = den = 0.0
    for n, w in zip(normals, weights, strict=False):
        t, r = displayable(sh_shade(n, sh)), rig.shade(n)
        num += w * sum((a - b) ** 2 for a, b in zip(r, t, strict=False))
        den += w * sum(a * a for a in t)
    return math.sqrt(num / den) if den > 0 else 0.0


def subsample(normals, weights=None, limit=600):
    """At most `limit` evenly strided normals (with their weights)."""
    weights = weights or [1.0] * len(normals)
    if len(normals) <= limit:
        return list(normals), list(weights)
    stride = len(normals) / limit
    idx = [int(i * stride) for i in range(limit)]
    return [normals[i] for i in idx], [weights[i] for i in idx]


ROLES = ("key", "fill", "fill_2", "fill_3")


MIN_FACING = -0.2  # a sun may shine from at most ~100 degrees off the camera's direction


def fit_lights(sh, normals=None, weights=None, max_suns: int = 2, soft: bool = True, candidates: int = 120,
               min_gain: float = 0.05, view_dir=None, min_facing: float = MIN_FACING) -> LightRig:
    """Approximate SH lighting by a world colour plus up to `max_suns` suns; see the module doc.

    normals/weights: the unit world normals to be matched (e.g. the head's vertex normals,
    area-weighted, front-facing ones weighted up); default: the whole sphere. Suns are
    added greedily (key first); one more is kept only when it lowers the squared error by
    `min_gain` (relative) or more. soft: the suns' angular sizes are fitted too (wide suns
    fall off smoothly, like low-order SH); else every sun is narrow (a clamped cosine).

    view_dir (unit, toward the camera): suns only from directions d with d.view_dir >=
    `min_facing`. The photo saw the front: behind the head the SH is extrapolation (its
    band 2 grows there), and a sun fitted to it lit the face's back from behind (the
    astronaut's blue key at 160 degrees). A rim or side light the photo shows lights the
    silhouette, whose normals are at ~90 degrees: min_facing = -0.2 keeps such a light.
    """
    if normals is None:
        normals = fibonacci_sphere(400)
    normals = [normalize(n) for n in normals]
    normals, weights = subsample(normals, weights, limit=400)
    problem = _Problem(sh, normals, weights)
    closed = closed_form_rig(sh)
    closed.error = closed.closed_form_error = rig_error(closed, sh, normals, weights)

    def allowed(d):
        return view_dir is None or sum(a * b for a, b in zip(d, view_dir, strict=False)) >= min_facing

    suns: list = []  # (direction, angle)
    error = problem.solve([])[0]
    grid = [d for d in fibonacci_sphere(candidates) if allowed(d)]
    angles = (NARROW, 0.5 * WIDE, WIDE) if soft else (NARROW,)
    for k in range(max(0, max_suns)):
        fixed = [problem.feature(*s) for s in suns]
        pool = ([closed.suns[0].direction] if k == 0 and closed.suns and allowed(closed.suns[0].direction) else []) + grid
        best = None
        for d in pool:
            for angle in angles:
                err = problem.solve(fixed + [problem.feature(d, angle)])[0]
                if best is None or err < best[0]:
                    best = (err, (d, angle))
        if best is None or best[0] > error * (1 - min_gain):
            break
        suns.append(best[1])
        error = best[0]
        for _ in range(2):
            for i in reversed(range(len(suns))):  # the new sun first, then nudge the others
                error = _refine(problem, suns, i, error, step=0.2 if i == len(suns) - 1 else 0.08, soft=soft,
                                allowed=allowed)

    _, amb, powers = problem.solve([problem.feature(*s) for s in suns])
    out = [Sun(tuple(d), tuple(p), angle=a) for (d, a), p in zip(suns, powers, strict=False) if max(p) > 1e-6]
    out.sort(key=lambda s: -s.intensity)
    for i, sun in enumerate(out):
        sun.role = ROLES[i] if i < len(ROLES) else f"fill_{i}"
    rig = LightRig(tuple(amb), out, 0.0, closed.closed_form_error)
    rig.error = rig_error(rig, sh, normals, weights)
    return rig


def convex_hull(points):
    """Convex hull of 2D points (monotone chain), counter-clockwise in a y-up frame."""
    pts = sorted(set((float(x), float(y)) for x, y in points))
    if len(pts) < 3:
        return pts

    def half(seq):
        out = []
        for p in seq:
            while len(out) >= 2 and ((out[-1][0] - out[-2][0]) * (p[1] - out[-2][1])
                                     - (out[-1][1] - out[-2][1]) * (p[0] - out[-2][0])) <= 0:
                out.pop()
            out.append(p)
        return out

    lower, upper = half(pts), half(list(reversed(pts)))
    return lower[:-1] + upper[:-1]


def inside_convex(hull, p) -> bool:
    if len(hull) < 3:
        return False
    for a, b in zip(hull, hull[1:] + hull[:1], strict=False):
        if (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0]) < 0:
            return False
    return True


def head_normals(vertices, faces, view_dir=None, back_weight=0.05, emphasis=None):
    """Unit vertex normals of a triangle mesh (flat lists of xyz / index triples) with a
    weight per vertex: its area, times (n·view_dir + back_weight) when view_dir (the unit
    vector toward the camera) is given, i.e. about the pixels it covers in the photo, with
    a little weight left for the sides the camera does not see; times emphasis[v] when
    given (e.g. more weight on the face, where the fit saw the light)."""
    V = len(vertices) // 3
    acc = [0.0] * (3 * V)
    for f in range(len(faces) // 3):
        i, j, k = faces[3 * f], faces[3 * f + 1], faces[3 * f + 2]
        ax, ay, az = vertices[3 * i:3 * i + 3]
        e1 = (vertices[3 * j] - ax, vertices[3 * j + 1] - ay, vertices[3 * j + 2] - az)
        e2 = (vertices[3 * k] - ax, vertices[3 * k + 1] - ay, vertices[3 * k + 2] - az)
        n = _cross(e1, e2)  # length = 2 * area
        for v in (i, j, k):
            acc[3 * v] += n[0]
            acc[3 * v + 1] += n[1]
            acc[3 * v + 2] += n[2]
    normals, weights = [], []
    for v in range(V):
        n = acc[3 * v:3 * v + 3]
        length = math.sqrt(n[0] ** 2 + n[1] ** 2 + n[2] ** 2)
        if length == 0:
            continue
        unit = (n[0] / length, n[1] / length, n[2] / length)
        w = length
        if view_dir is not None:
            w *= max(0.0, sum(a * b for a, b in zip(unit, view_dir, strict=False))) + back_weight
        if emphasis is not None:
            w *= emphasis[v]
        normals.append(unit)
        weights.append(w)
    return normals, weights
