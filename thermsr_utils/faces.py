"""One person drawn at a temperature: a subject's fixed appearance, a frame's pose, the 54 SF-TL54 landmarks, and
the renderer that paints body, head and face into a temperature map (°C). ``synthetic`` puts people into scenes.

Geometry lives in a face-centred frame ("face units"): x to the image right, y down, origin between the
eyes, one unit = half the face width at its widest. A frame's pose maps face units to pixels by a
similarity transform (centre, scale, roll) plus a small yaw modelled as a depth-weighted horizontal shift,
so features near the nose move more than the face outline. Landmarks are projected with the same mapping
the renderer inverts, so each landmark sits on the pixel that shows its feature.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

N_LANDMARKS = 54
NOSE_TIP = 30  # 0-based landmark index of the nose tip
INNER_EYE_CORNERS = (39, 42)  # 0-based: image-left eye's inner corner, image-right eye's inner corner

TEX_DU = 0.0125  # face units per texel of the finest subject texture
_TEX_U = (-1.9, 1.9)  # face-unit window covered by the fine textures
_TEX_V = (-2.1, 3.8)
_BODY_DU = 0.1  # face units per texel of the coarse clothing texture
_BODY_U = (-4.0, 4.0)
_BODY_V = (-1.0, 22.0)


@dataclass(frozen=True)
class Subject:
    """One person's fixed appearance: geometry in face units, temperatures in degrees Celsius."""

    sub_id: int
    sex: str
    half_width: float  # face half-width in SF-TL54 pixels (frames jitter around it)
    v_widest: float  # y of the widest face level
    jaw_len: float  # widest level to chin
    skull_len: float  # widest level to top of skull
    jaw_p: float  # superellipse exponent of the jaw (2 = round, larger = square)
    skull_p: float
    eye_dx: float
    eye_w: float  # half length of the eye opening
    eye_h: float  # half height of the eye opening
    brow_v: float
    brow_arch: float
    brow_thick: float
    tip_v: float  # y of the nose tip
    nose_w: float  # half width of the nose base
    nose_h: float  # nose protrusion (depth units), drives the yaw shift of the nose
    mouth_v: float
    mouth_w: float
    lip_h: float
    hair: str  # short | long | bald | curly
    hairline: float
    hair_volume: float
    hair_len: float  # y where long hair ends
    hair_frac: float  # hair temperature as a fraction of the way from ambient to skin
    hair_wave: float
    beard: float  # 0 = clean shaven, 1 = full beard
    glasses: bool
    glass_w: float
    glass_h: float
    skin: float  # core facial skin temperature
    nose_cool: float
    canthus_hot: float
    eye_cool: float  # how much cooler the open eye (cornea, lashes) is than the skin around it
    ear_cool: float
    cheek_cool: float
    cloth_frac: float
    neckline: str  # round | vee | collar
    shoulder_w: float
    neck_w: float
    ambient: float
    tex_seed: int


@dataclass(frozen=True)
class Pose:
    """Where and how one subject appears in one frame."""

    cx: float  # pixel position of the face-unit origin (between the eyes)
    cy: float
    scale: float  # pixels per face unit
    roll: float  # radians, positive = clockwise on screen
    yaw: float  # signed fraction; positive turns features toward the image right
    mouth_open: float  # 0 closed .. 1 open
    skin_dt: float  # frame-to-frame skin temperature jitter (K)
    breath: float  # nostril temperature offset (K): exhale > 0 > inhale
    back_view: bool = False  # facing away from the camera: no face features


def make_subject(sub_id: int, rng: np.random.Generator) -> Subject:
    """Draw one subject's appearance from ``rng`` (a generator private to this subject)."""
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    sex = "F" if rng.random() < 0.5 else "M"
    r_hair = rng.random()
    if sex == "F":
        hair = "long" if r_hair < 0.6 else ("curly" if r_hair < 0.8 else "short")
    else:
        hair = "short" if r_hair < 0.6 else ("bald" if r_hair < 0.75 else ("curly" if r_hair < 0.9 else "long"))
    beard = u(0.3, 1.0) if (sex == "M" and rng.random() < 0.35) else 0.0
    skin = float(rng.normal(34.2, 0.45))
    return Subject(
        sub_id=int(sub_id), sex=sex, half_width=u(66, 96), v_widest=u(0.05, 0.25), jaw_len=u(1.4, 1.65),
        skull_len=u(1.55, 1.8), jaw_p=u(1.9, 2.8), skull_p=u(2.0, 2.4),
        eye_dx=u(0.40, 0.48), eye_w=u(0.17, 0.22), eye_h=u(0.08, 0.11),
        brow_v=u(-0.36, -0.26), brow_arch=u(0.02, 0.08), brow_thick=u(0.035, 0.075),
        tip_v=u(0.46, 0.58), nose_w=u(0.17, 0.25), nose_h=u(0.28, 0.42),
        mouth_v=u(0.86, 0.98), mouth_w=u(0.30, 0.40), lip_h=u(0.04, 0.07),
        hair=hair, hairline=u(-1.15, -0.85) if hair != "bald" else -1.9,
        hair_volume=u(0.06, 0.14) if hair != "curly" else u(0.18, 0.32),
        hair_len=u(1.8, 3.4), hair_frac=u(0.35, 0.6), hair_wave=u(0.0, 0.05),
        beard=beard, glasses=bool(rng.random() < 0.3), glass_w=u(0.22, 0.3), glass_h=u(0.15, 0.21),
        skin=skin, nose_cool=u(1.4, 3.4), canthus_hot=u(1.9, 2.7), ear_cool=u(1.5, 3.0), cheek_cool=u(0.5, 1.3),
        cloth_frac=u(0.4, 0.72), neckline=("round", "vee", "collar")[int(rng.integers(3))], shoulder_w=u(2.4, 3.0),
        neck_w=u(0.52, 0.64), ambient=u(20.5, 25.0), tex_seed=int(rng.integers(2**31)), eye_cool=u(4.0, 5.0),
    )


def canonical_landmarks(s: Subject, mouth_open: float = 0.0) -> np.ndarray:
    """The 54 SF-TL54 landmarks of ``s`` in face units, float64 (54, 2), in SF-TL54 order."""
    pts = np.zeros((N_LANDMARKS, 2))
    # 0-16: jaw contour on the face silhouette, image-left ear level -> chin -> image-right ear level.
    th = np.pi * (1.0 - np.arange(17) / 16.0)
    c, sn = np.cos(th), np.abs(np.sin(th))
    pts[0:17, 0] = np.sign(c) * np.abs(c) ** (2.0 / s.jaw_p)
    pts[0:17, 1] = s.v_widest + s.jaw_len * sn ** (2.0 / s.jaw_p)
    # 17-21 image-left brow outer -> inner, 22-26 image-right brow inner -> outer.
    bx = np.linspace(-0.80, -0.18, 5)
    pts[17:22] = np.stack([bx, _brow_y(s, bx)], 1)
    pts[22:27] = np.stack([-bx[::-1], _brow_y(s, -bx[::-1])], 1)
    # 27-30 nose bridge down to the tip; 31-35 nose base, 33 = centre.
    pts[27:31, 1] = np.linspace(-0.06, s.tip_v, 4)
    nb = s.tip_v + 0.11
    pts[31:36, 0] = np.array([-1.0, -0.5, 0.0, 0.5, 1.0]) * s.nose_w
    pts[31:36, 1] = nb + np.array([-0.03, 0.0, 0.015, 0.0, -0.03])
    # 36-41 image-left eye (outer, upper x2, inner, lower x2); 42-47 image-right eye (inner first).
    for k, ex in enumerate((-s.eye_dx, s.eye_dx)):  # both listed left to right along the upper lid, then back
        xs = ex + np.array([-1.0, -0.35, 0.35, 1.0, 0.35, -0.35]) * s.eye_w
        up, lo = _lids(s, xs, ex)
        ys = np.array([0, up[1], up[2], 0, lo[4], lo[5]])
        pts[36 + 6 * k: 42 + 6 * k] = np.stack([xs, ys], 1)
    # 48-53 lips: left corner, upper-lip top, right corner, lower-lip bottom, upper inner, lower inner.
    gap = 0.08 * mouth_open
    mv, mw = s.mouth_v, s.mouth_w
    pts[48:54] = [[-mw, mv], [0.0, mv - gap / 2 - s.lip_h], [mw, mv], [0.0, mv + gap / 2 + 1.3 * s.lip_h],
                  [0.0, mv - gap / 2], [0.0, mv + gap / 2]]
    return pts


def _brow_y(s: Subject, x):
    """y of the brow centre line at face-unit x (either side)."""
    t = (np.abs(x) - 0.5) / 0.34
    return s.brow_v - s.brow_arch * (1.0 - np.clip(t, -1, 1) ** 2) + 0.03 * np.clip(np.abs(x) - 0.65, 0, None) / 0.15


def _lids(s: Subject, x, ex):
    """y of the upper and of the lower eyelid at x for an eye centred at ex."""
    bulge = np.clip(1.0 - ((x - ex) / s.eye_w) ** 2, 0, None)
    return -s.eye_h * bulge, 0.7 * s.eye_h * bulge


def _head_radius(s: Subject, u, v):
    """Superellipse radius of the head outline: 1 on the silhouette, below 1 inside (same dtype as u)."""
    au, dv = np.abs(u), np.abs(v - s.v_widest)
    jaw = (au ** s.jaw_p + (dv / s.jaw_len) ** s.jaw_p) ** (1.0 / s.jaw_p)
    skull = (au ** s.skull_p + (dv / s.skull_len) ** s.skull_p) ** (1.0 / s.skull_p)
    return np.where(v > s.v_widest, jaw, skull)


def _depth(s: Subject, u, v):
    """Surface height toward the camera (face units): a rounded head plus the nose ridge."""
    r = _head_radius(s, u, v)
    d = np.sqrt(np.clip(1.0 - r * r, 0.0, None))
    t = np.clip((v + 0.06) / (s.tip_v + 0.06), 0.0, 1.0)
    below = np.exp(-np.clip(v - s.tip_v, 0.0, None) ** 2 / 0.012)
    nose = s.nose_h * (0.3 + 0.7 * t) * below * np.exp(-u * u / (2 * 0.13 ** 2))
    return d + nose


def project(s: Subject, pose: Pose, pts) -> np.ndarray:
    """Face-unit points (N, 2) -> pixel coordinates (N, 2) under ``pose`` (inverse of the renderer's map)."""
    pts = np.asarray(pts, dtype=np.float64)
    uc, v = pts[:, 0], pts[:, 1]
    u = uc.copy()
    for _ in range(40):  # fixed point of u = uc + yaw * depth(u, v); contracting for |yaw| <= 0.2
        u, prev = uc + pose.yaw * _depth(s, u, v), u
        if np.max(np.abs(u - prev), initial=0.0) < 1e-7:
            break
    c, sn = np.cos(pose.roll), np.sin(pose.roll)
    x = pose.cx + pose.scale * (c * u - sn * v)
    y = pose.cy + pose.scale * (sn * u + c * v)
    return np.stack([x, y], 1)


# --- Textures (per subject, in face units) ---
def _unit_noise(rng, shape, sigma_xy):
    """Gaussian-blurred white noise at unit standard deviation, float32 of ``shape``; wide blurs are made on a
    coarser grid and interpolated up (same look, a fraction of the cost)."""
    h, w = shape
    f = max(1, int(min(sigma_xy) // 2))
    n = rng.standard_normal((h // f + 2, w // f + 2), dtype=np.float32)
    n = cv2.GaussianBlur(n, (0, 0), sigmaX=sigma_xy[0] / f, sigmaY=sigma_xy[1] / f, borderType=cv2.BORDER_REFLECT)
    if f > 1:
        n = cv2.resize(n, ((w // f + 2) * f, (h // f + 2) * f), interpolation=cv2.INTER_LINEAR)
    n = np.ascontiguousarray(n[:h, :w])
    return n / max(float(n.std()), 1e-6)


def make_textures(s: Subject, du: float = TEX_DU) -> dict:
    """The subject's fixed texture fields, sampled every ``du`` face units: ``fine`` (float32 H×W×4: hair strands,
    fine noise for stubble and brow hair, vessel-like ridges, a low-frequency wobble for ragged outlines) and
    ``coarse`` (float32 H×W×2: clothing folds and weave); roughly zero mean and unit spread (ridges in [0, 1])."""
    rng = np.random.default_rng(s.tex_seed)
    w = int(np.ceil((_TEX_U[1] - _TEX_U[0]) / du))
    h = int(np.ceil((_TEX_V[1] - _TEX_V[0]) / du))
    k = TEX_DU / du  # coarser texels get proportionally smaller blurs (same look in face units)
    if s.hair == "curly":
        strands = 0.7 * _unit_noise(rng, (h, w), (1.6 * k, 1.6 * k)) + 0.7 * _unit_noise(rng, (h, w), (5 * k, 5 * k))
    else:
        strands = 0.8 * _unit_noise(rng, (h, w), (0.6 * k, 7.0 * k)) + 0.5 * _unit_noise(rng, (h, w), (3 * k, 12 * k))
    fine_noise = _unit_noise(rng, (h, w), (0.9 * k, 0.9 * k))
    veins = np.exp(-(_unit_noise(rng, (h, w), (10.0 * k, 10.0 * k)) / 0.16) ** 2)
    wobble = _unit_noise(rng, (h, w), (14.0 * k, 14.0 * k))
    fine = np.ascontiguousarray(np.stack([strands, fine_noise, veins, wobble], -1).astype(np.float32))
    bw = int(np.ceil((_BODY_U[1] - _BODY_U[0]) / _BODY_DU))
    bh = int(np.ceil((_BODY_V[1] - _BODY_V[0]) / _BODY_DU))
    folds = _unit_noise(rng, (bh, bw), (2.5, 6.0))
    weave = _unit_noise(rng, (bh, bw), (0.5, 0.5))
    coarse = np.ascontiguousarray(np.stack([folds, weave], -1).astype(np.float32))
    return {"du": du, "fine": fine, "coarse": coarse}


def _sample(tex: np.ndarray, u, v, origin, du, shift=None):
    """Sample a texture (H, W, C) at face-unit coordinates: bilinear, mirrored borders, float32 (…, C)."""
    mx = (u - origin[0]) / du
    if shift is not None:
        mx = mx + shift
    my = (v - origin[1]) / du
    out = cv2.remap(tex, mx.astype(np.float32), my.astype(np.float32), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REFLECT_101)
    return out if out.ndim == 3 else out[..., None]


# --- Drawing helpers (face units; ``px`` is the size of one pixel in face units) ---
def _cov(sd, px):
    """Antialiased coverage of the region sd < 0 (linear ramp one pixel wide), float32 in [0, 1]."""
    return np.clip(0.5 - sd / px, 0.0, 1.0).astype(np.float32)


def _soft(sd, width):
    """Smooth coverage of the region sd < 0 over ``width`` (smoothstep), float32 in [0, 1]."""
    t = np.clip(0.5 - sd / width, 0.0, 1.0)
    return (t * t * (3 - 2 * t)).astype(np.float32)


def _gauss(u, v, cx, cy, sx, sy):
    """Unnormalised 2-D Gaussian bump with peak 1, float32."""
    return np.exp(-(((u - cx) / sx) ** 2 + ((v - cy) / sy) ** 2) * 0.5).astype(np.float32)


def _capsule_sd(u, v, p0, p1, r):
    """Signed distance to a capsule (segment p0-p1 swept by radius r)."""
    ax, ay = p1[0] - p0[0], p1[1] - p0[1]
    t = np.clip(((u - p0[0]) * ax + (v - p0[1]) * ay) / max(ax * ax + ay * ay, 1e-9), 0.0, 1.0)
    return np.hypot(u - p0[0] - t * ax, v - p0[1] - t * ay) - r


def _box_sd(u, v, cx, cy, hx, hy, r=0.0):
    """Signed distance to an axis-aligned box (half sizes hx, hy) with corners rounded by r."""
    qx = np.abs(u - cx) - (hx - r)
    qy = np.abs(v - cy) - (hy - r)
    return np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0) - r


def _over(T, alpha, value):
    """Composite ``value`` over the temperature map T (in place) with coverage ``alpha``."""
    T += alpha * (value - T)


def _map_px(s: Subject, pose: Pose, cu, cv, body: bool = False):
    """Face-unit points -> pixel coordinates, ignoring yaw (for windows, not landmarks). The head rolls about the
    face origin; the torso (``body``) stays upright and joins the head where the neck meets the shoulders."""
    cu, cv = np.asarray(cu, np.float64), np.asarray(cv, np.float64)
    c, sn = np.cos(pose.roll), np.sin(pose.roll)
    if not body:
        return pose.cx + pose.scale * (c * cu - sn * cv), pose.cy + pose.scale * (sn * cu + c * cv)
    v_sh = _shoulder_v(s)
    px, py = pose.cx - pose.scale * sn * v_sh, pose.cy + pose.scale * c * v_sh
    return px + pose.scale * cu, py + pose.scale * (cv - v_sh)


class _Frame:
    """Face-unit coordinates of a person's pixel window, with sub-windows for cheap local drawing: ``u, v`` on the
    head (rolled, yaw undone), ``ub, vb`` on the upright body."""

    def __init__(self, s: Subject, pose: Pose, roi):
        self.s, self.pose, self.roi = s, pose, roi
        y0, y1, x0, x1 = roi
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32) + np.float32(0.5)
        c, sn = np.float32(np.cos(pose.roll)), np.float32(np.sin(pose.roll))
        dx = (xx - np.float32(pose.cx)) / np.float32(pose.scale)
        dy = (yy - np.float32(pose.cy)) / np.float32(pose.scale)
        self.u = c * dx + sn * dy
        self.v = -sn * dx + c * dy
        px0, py0 = _map_px(s, pose, 0.0, _shoulder_v(s), body=True)
        self.ub = (xx - np.float32(px0)) / np.float32(pose.scale)
        self.vb = (yy - np.float32(py0)) / np.float32(pose.scale) + np.float32(_shoulder_v(s))
        self.px = 1.0 / pose.scale
        if pose.yaw != 0.0:  # undo the yaw shift where the head has depth
            w = self.win(-1.1, s.v_widest - s.skull_len - 0.1, 1.1, s.v_widest + s.jaw_len + 0.1)
            if w is not None:
                self.u[w] -= np.float32(pose.yaw) * _depth(s, self.u[w], self.v[w]).astype(np.float32)

    def win(self, ua, va, ub, vb, body: bool = False):
        """Slices (rows, cols) of the window covering a face-unit box, or None when it is off-frame."""
        m = abs(self.pose.yaw) * 1.6 + 3 * self.px
        xs, ys = _map_px(self.s, self.pose, [ua - m, ub + m, ua - m, ub + m], [va - m, va - m, vb + m, vb + m], body)
        h, w = self.u.shape
        x0, x1 = max(int(np.floor(xs.min())) - self.roi[2], 0), min(int(np.ceil(xs.max())) + 1 - self.roi[2], w)
        y0, y1 = max(int(np.floor(ys.min())) - self.roi[0], 0), min(int(np.ceil(ys.max())) + 1 - self.roi[0], h)
        return None if x0 >= x1 or y0 >= y1 else (slice(y0, y1), slice(x0, x1))


# --- The person renderer ---
def _shoulder_v(s: Subject) -> float:
    """y of the top of the shoulders where they meet the neck."""
    return s.v_widest + s.jaw_len + 0.55


def _person_extent(s: Subject, full_body: bool):
    """Face-unit box (u0, v0, u1, v1) containing everything drawn for one person."""
    bottom = _shoulder_v(s) + 18.2 if full_body else 60.0
    top = s.v_widest - s.skull_len * (1.0 + s.hair_volume) - 0.2
    return (-s.shoulder_w - 0.6, top, s.shoulder_w + 0.6, bottom)


# How much cooler (K) each facial feature is drawn than the skin around it (nose terms scale with the subject's
# nose_cool, the open eye with its eye_cool). Set so that an RGB-trained face model reads the features where the
# landmarks say they are (notebook 02's instrument check).
LOOK = {"ridge": 0.8, "tip": 0.1, "alae": 0.2, "nostrils": 2.5, "eye": 1.0, "lashes": 2.5, "brows": 1.0, "lips": 1.2}


def render_person(T: np.ndarray, s: Subject, pose: Pose, tex: dict, *, full_body: bool = False) -> tuple:
    """Draw one person into the temperature map T (float32 H×W, °C) in place, part by part from back to front;
    ``full_body`` adds legs and hands (a standing person), else the torso runs off the frame. Returns ``(roi, alpha)``:
    the (y0, y1, x0, x1) pixel window touched and the person's coverage there (float32 in [0, 1]), or ``(None, None)``
    when the person lies entirely outside the frame."""
    roi = _person_roi(T.shape, s, pose, full_body)
    if roi is None:
        return None, None
    P = _Person(T, s, pose, tex, roi, full_body)
    for part in (P.clothing, P.long_hair, P.neck, P.ears):
        part()
    if P.face():  # drawn (on-frame and not seen from behind): hair frames it, glasses sit on it
        P.head_hair()
        P.glasses()
    return roi, P.alpha


def _person_roi(shape, s: Subject, pose: Pose, full_body: bool):
    """Pixel window (y0, y1, x0, x1) holding everything drawn for one person, or None when it is off-frame."""
    H, W = shape
    u0, v0, u1, v1 = _person_extent(s, full_body)
    v_sh = _shoulder_v(s)
    hx, hy = _map_px(s, pose, [u0, u1, u0, u1], [v0, v0, v_sh + 1.5, v_sh + 1.5])
    bx, by = _map_px(s, pose, [u0, u1, u0, u1], [v_sh - 0.5, v_sh - 0.5, v1, v1], body=True)
    xs, ys = np.concatenate([hx, bx]), np.concatenate([hy, by])
    x0, x1 = max(int(np.floor(xs.min())) - 2, 0), min(int(np.ceil(xs.max())) + 2, W)
    y0, y1 = max(int(np.floor(ys.min())) - 2, 0), min(int(np.ceil(ys.max())) + 2, H)
    return None if x0 >= x1 or y0 >= y1 else (y0, y1, x0, x1)


class _Person(_Frame):
    """One person being drawn, one method per part: a ``_Frame`` plus the temperature window ``sub`` (a view into
    T), the coverage ``alpha`` drawn so far, shared temperatures and the fine textures sampled on the window."""

    def __init__(self, T: np.ndarray, s: Subject, pose: Pose, tex: dict, roi, full_body: bool):
        super().__init__(s, pose, roi)
        self.sub = T[roi[0]:roi[1], roi[2]:roi[3]]
        self.alpha = np.zeros_like(self.sub)
        self.full_body, self.tex, self.extent = full_body, tex, _person_extent(s, full_body)
        self.skin, self.amb = s.skin + pose.skin_dt, s.ambient
        self.chin, self.v_sh = s.v_widest + s.jaw_len, _shoulder_v(s)
        # the fine textures (hair strands, skin grain, vessels, wobble) on the window; clothing samples the coarse one
        u, v, px, hv, du = self.u, self.v, self.px, s.hair_volume, tex["du"]
        pre = 0.45 * px / du  # texels per pixel; prefilter so that small people do not alias
        fine = cv2.GaussianBlur(tex["fine"], (0, 0), pre) if pre > 0.7 else tex["fine"]
        self.damp = 1.0 / np.sqrt(max(pre, 1.0))  # sub-pixel detail averages out
        tw = self.win(-1.5 - hv, self.extent[1], 1.5 + hv,
                      max(self.v_sh + 1.8, s.hair_len + 0.4 if s.hair == "long" else 0.0))
        ft = np.zeros(u.shape + (4,), np.float32)
        if tw is not None:
            shift = (s.hair_wave / du) * np.sin(v[tw] * 7.0 + (s.tex_seed % 7)) if s.hair_wave > 0 else None
            ft[tw] = _sample(fine, u[tw], v[tw], (_TEX_U[0], _TEX_V[0]), du, shift)
        self.strands, self.grain, self.veins, self.wobble = (ft[..., i] for i in range(4))
        self.strands_d, self.grain_d = self.strands * self.damp, self.grain * self.damp
        self.t_hair = self.amb + s.hair_frac * (self.skin - self.amb) + 1.4 * self.strands_d

    def area(self, ua, va, ub, vb, body: bool = False):
        """``(w, uu, vv)``: ``win``'s slices and head (or body) coordinates there; empty off-frame (nothing drawn)."""
        w = self.win(ua, va, ub, vb, body) or (slice(0, 0), slice(0, 0))
        return (w, self.ub[w], self.vb[w]) if body else (w, self.u[w], self.v[w])

    def paint(self, w, a, value):
        """Composite ``value`` over window ``w`` with coverage ``a``, which joins the person's coverage."""
        _over(self.sub[w], a, value)
        self.alpha[w] = np.maximum(self.alpha[w], a)

    def clothing(self):
        """Torso and arms in clothing (legs and hands too for a full body), skin at the neckline, a collar."""
        s, px, skin, amb, v_sh = self.s, self.px, self.skin, self.amb, self.v_sh
        sw, nw = s.shoulder_w, s.neck_w
        bw, uu, vv = self.area(-sw - 0.6, v_sh - 0.3, sw + 0.6, self.extent[3], body=True)
        if not uu.size:  # off-frame
            return
        cloth = amb + s.cloth_frac * (skin - amb)
        ct = _sample(self.tex["coarse"], uu, vv, (_BODY_U[0], _BODY_V[0]), _BODY_DU)
        folds, weave = ct[..., 0], ct[..., 1] * self.damp
        hip = v_sh + 7.0 if self.full_body else 80.0
        sd = np.minimum(_capsule_sd(uu, vv, (-(nw - 0.1), v_sh + 0.3), (-(sw - 0.55), v_sh + 0.85), 0.55),
                        _capsule_sd(uu, vv, (nw - 0.1, v_sh + 0.3), (sw - 0.55, v_sh + 0.85), 0.55))
        sd = np.minimum(sd, _box_sd(uu, vv, 0.0, (v_sh + 0.85 + hip) / 2, sw - 0.5, (hip - v_sh - 0.85) / 2, 0.25))
        sd = np.minimum(sd, _box_sd(uu, vv, 0.0, v_sh + 0.7, nw + 0.3, 0.5))
        arm_end = v_sh + 6.6 if self.full_body else 80.0
        arms = np.minimum(_capsule_sd(uu, vv, (-(sw - 0.45), v_sh + 1.0), (-(sw - 0.15), arm_end), 0.45),
                          _capsule_sd(uu, vv, (sw - 0.45, v_sh + 1.0), (sw - 0.15, arm_end), 0.45))
        sd = np.minimum(sd, arms)
        t_body = cloth + 0.5 * folds + 0.3 * weave + 0.8 * np.clip(1.0 - (vv - v_sh) / 3.0, 0, 1)
        crease = _soft(np.abs(np.abs(uu) - (sw - 0.9)) - 0.015, 2 * px) * (vv > v_sh + 1.3)
        t_body -= 0.8 * crease
        self.paint(bw, _cov(sd, px), t_body)
        if self.full_body:
            legs = np.minimum(_capsule_sd(uu, vv, (-0.62, hip), (-0.7, hip + 11.0), 0.52),
                              _capsule_sd(uu, vv, (0.62, hip), (0.7, hip + 11.0), 0.52))
            self.paint(bw, _cov(legs, px), amb + 0.6 * s.cloth_frac * (skin - amb) + 0.5 * folds)
            hands = np.minimum(np.hypot(uu + sw - 0.15, vv - arm_end - 0.4),
                               np.hypot(uu - sw + 0.15, vv - arm_end - 0.4))
            self.paint(bw, _cov(hands - 0.38, px), skin - 2.0)
        # skin showing at the neckline, and a collar
        if s.neckline == "vee":
            sd_open = np.maximum(np.abs(uu) - 0.62 * np.clip(1 - (vv - v_sh - 0.1) / 1.4, 0, 1), v_sh - 0.2 - vv)
        else:  # round, or the smaller opening under a collar
            rx, ry = (0.7, 0.45) if s.neckline == "round" else (0.55, 0.3)
            sd_open = (np.hypot(uu / rx, (vv - v_sh - 0.05) / ry) - 1.0) * ry
        chest = skin - 1.3 - 0.5 * np.clip(vv - v_sh, 0, 1) + 0.15 * self.grain_d[bw]
        _over(self.sub[bw], _soft(sd_open, 1.5 * px) * _cov(sd, px), chest)
        if s.neckline == "collar":
            flap = np.minimum(_capsule_sd(uu, vv, (-0.3, v_sh + 0.1), (-0.85, v_sh + 0.55), 0.15),
                              _capsule_sd(uu, vv, (0.3, v_sh + 0.1), (0.85, v_sh + 0.55), 0.15))
            _over(self.sub[bw], _cov(flap, px), cloth - 0.7)

    def long_hair(self):
        """Long hair's curtains behind the face, over the shoulders."""
        s, hv = self.s, self.s.hair_volume
        if s.hair != "long" or self.pose.back_view:
            return
        lw, uu, vv = self.area(-1.35 - hv, self.extent[1], 1.35 + hv, s.hair_len + 0.4)
        dv = vv - s.v_widest
        top = np.sqrt(np.clip(1.0 - (np.minimum(dv, 0) / (s.skull_len * (1.0 + 0.8 * hv))) ** 2, 0, 1))
        width = (1.0 + hv + 0.1) * top + 0.07 * np.clip(dv, 0, None) + 0.05 * self.wobble[lw]
        sd = np.maximum(np.abs(uu) - width, vv - s.hair_len - 0.2 * self.wobble[lw])
        edge = np.clip(-sd / 0.15, 0, 1)
        a = _soft(sd - 0.02 * self.strands[lw], 2 * self.px)
        self.paint(lw, a, self.t_hair[lw] - 1.2 * (1 - edge) - 0.5 * np.clip((vv - self.chin) / 2.0, 0, 1))

    def neck(self):
        """The neck: a warm cylinder flaring into the shoulders, cooler under the jaw."""
        s, nw, v_sh, chin = self.s, self.s.neck_w, self.v_sh, self.chin
        w, uu, vv = self.area(-nw - 0.5, s.v_widest, nw + 0.5, v_sh + 0.8)
        flare = np.clip((vv - v_sh + 0.5) / 0.8, 0, 1)
        width = nw + 0.3 * flare * flare
        sd = np.maximum(np.abs(uu) - width, np.maximum(s.v_widest + 0.3 - vv, vv - v_sh - 0.7))
        t = (self.skin - 0.3 + 0.2 * self.veins[w] - 0.4 * np.clip((vv - chin) / 1.2, 0, 1)
             - 1.6 * (np.abs(uu) / width) ** 4)
        t -= 1.5 * np.exp(-0.5 * ((vv - chin - 0.06) / 0.1) ** 2)  # under the jaw the skin faces away: cooler
        self.paint(w, _cov(sd, self.px), t)

    def ears(self):
        """Ears, unless long or curly hair covers them: cool, with a warmer rim."""
        s, px = self.s, self.px
        if s.hair in ("long", "curly") and not self.pose.back_view:
            return
        for side in (-1.0, 1.0):
            w, uu, vv = self.area(side * 1.0 - 0.2, s.v_widest - 0.3, side * 1.0 + 0.2, s.v_widest + 0.5)
            sd = (np.hypot((uu - side * 1.0) / 0.14, (vv - s.v_widest - 0.08) / 0.3) - 1.0) * 0.14
            rim = _soft(np.abs(sd + 0.04) - 0.012, 2 * px)
            self.paint(w, _cov(sd, px), self.skin - s.ear_cool + 0.7 * rim - 0.4 * _soft(-sd - 0.06, 3 * px))

    def face(self) -> bool:
        """The head's outline filled with the skin field and the facial features (or with hair, seen from behind);
        returns whether a face was drawn: False when the head is off-frame or the person faces away."""
        s = self.s
        hd, uu, vv = self.area(-1.05, s.v_widest - s.skull_len - 0.05, 1.05, self.chin + 0.05)
        if not uu.size:  # off-frame
            return False
        r = _head_radius(s, uu, vv).astype(np.float32)
        a_head = _cov((r - 1.0) * np.where(vv > s.v_widest, 1.0, 1.3).astype(np.float32), self.px)
        self.alpha[hd] = np.maximum(self.alpha[hd], a_head)
        if self.pose.back_view:
            _over(self.sub[hd], a_head, self.t_hair[hd] if s.hair != "bald" else self.skin - 1.5)
            return False
        t = np.full(self.u.shape, self.skin, np.float32)  # the features below add to t, window by window
        t[hd] = self.skin_field(hd, uu, vv, r)
        for feature in (self.nose, self.eyes, self.lips, self.beard):
            feature(t)
        _over(self.sub[hd], a_head, t[hd])
        return True

    def skin_field(self, hd, uu, vv, r):
        """Skin temperature on the head: warm forehead and temples, cooler edges, cheeks, jaw and chin."""
        s, skin = self.s, self.skin
        rr = np.clip(r, 0.0, 1.0)
        th = skin + 0.8 * _gauss(uu, vv, 0.0, -0.75, 0.55, 0.3)  # warm forehead
        th += 0.35 * (_gauss(uu, vv, -0.82, -0.35, 0.14, 0.3) + _gauss(uu, vv, 0.82, -0.35, 0.14, 0.3))  # temples
        th -= 2.2 * np.clip((rr - 0.72) / 0.28, 0, 1) ** 2  # grazing-angle edges read cooler
        th -= 1.5 * uu * uu * np.clip((vv - 0.1) / 0.8, 0, 1)  # lower face cooler toward the jaw
        th -= s.cheek_cool * (_gauss(uu, vv, -0.62, 0.62, 0.22, 0.28) + _gauss(uu, vv, 0.62, 0.62, 0.22, 0.28))
        th -= 0.5 * _gauss(uu, vv, 0.0, self.chin - 0.12, 0.3, 0.14)  # chin
        th += 0.25 * self.veins[hd] * _gauss(uu, vv, 0.0, -0.55, 0.9, 0.55)  # superficial vessels
        th += 0.1 * self.grain_d[hd]  # skin mottling
        if s.hair == "bald":
            th -= 1.0 * np.clip((-vv - 1.0) / 0.5, 0, 1)  # scalp
        return th

    def nose(self, t):
        """Nose: cool tip, ridge and wings; warm alar grooves; nostrils that follow the breath; warm philtrum;
        warm nasolabial folds from its wings toward the mouth corners."""
        s, px, L, tip, nb = self.s, self.px, LOOK, self.s.tip_v, self.s.tip_v + 0.11
        w, uu, vv = self.area(-0.45, -0.15, 0.45, nb + 0.15)
        ridge = np.clip((vv + 0.05) / (tip + 0.05), 0, 1)  # 0 at the bridge, 1 at the tip
        half = 0.07 + 0.09 * ridge  # the nose widens toward its base
        along = np.exp(-np.clip(vv - tip, 0, None) ** 2 / (2 * 0.05 ** 2)) * (vv > -0.1)
        tn = -L["ridge"] * s.nose_cool * (0.8 + 0.2 * ridge) * along * np.exp(-uu * uu / (2 * half * half))  # dorsum
        tn -= L["tip"] * s.nose_cool * _gauss(uu, vv, 0.0, tip, 0.11, 0.08)  # the tip, coolest
        breath = self.pose.breath
        for side in (-1.0, 1.0):
            tn -= L["alae"] * s.nose_cool * _gauss(uu, vv, side * 0.8 * s.nose_w, nb - 0.05, 0.05, 0.05)  # alae
            crease = np.abs(np.hypot(uu - side * (s.nose_w - 0.08), vv - nb + 0.07) - 0.1) - 0.01
            tn += 0.6 * _soft(crease, 2.5 * px) * (side * uu > s.nose_w - 0.02) * (vv > nb - 0.2)  # alar groove
            tn += (breath - L["nostrils"]) * _gauss(uu, vv, side * 0.45 * s.nose_w, nb - 0.01, 0.06, 0.03)  # nostrils
        tn += 0.6 * _gauss(uu, vv, 0.0, nb + 0.07, 0.09, 0.04)  # warm philtrum under the nose
        t[w] += tn
        w, uu, vv = self.area(-s.mouth_w - 0.5, nb - 0.1, s.mouth_w + 0.5, s.mouth_v + 0.1)
        for side in (-1.0, 1.0):  # nasolabial folds
            fold = np.abs(np.hypot(uu - side * (s.nose_w + 0.5), vv - nb + 0.05) - 0.5) - 0.012
            t[w] += 0.5 * _soft(fold, 2 * self.px) * (vv > nb - 0.05) * (vv < s.mouth_v) * (side * uu > s.nose_w)

    def eyes(self, t):
        """Eyes: warm orbits, hottest inner canthi, a cool open eye (cornea, iris), lash lines, lid creases; brows."""
        s, px, L = self.s, self.px, LOOK
        for ex, side in ((-s.eye_dx, -1.0), (s.eye_dx, 1.0)):
            w, uu, vv = self.area(ex - 0.4, -0.35, ex + 0.4, 0.35)
            inner = ex - side * s.eye_w
            te = 0.7 * _gauss(uu, vv, ex + side * 0.02, 0.0, 0.22, 0.14)
            te -= 0.35 * _gauss(uu, vv, ex, 0.22, 0.16, 0.06)  # lower lid / cheek boundary
            te += s.canthus_hot * _gauss(uu, vv, inner + side * 0.015, 0.005, 0.045, 0.038)
            up, lo = _lids(s, uu, ex)
            a_eye = _cov(-np.minimum(vv - up, lo - vv), px) * (np.abs(uu - ex) < s.eye_w)
            te += a_eye * (-L["eye"] * s.eye_cool - 1.0 * _gauss(uu, vv, ex, 0.0, 0.055, 0.055))  # cornea, iris
            span = np.clip(1 - ((uu - ex) / (1.05 * s.eye_w)) ** 2, 0, 1)
            te -= L["lashes"] * _soft(np.abs(vv - up + 0.008) - 0.02, 1.5 * px) * span  # lash line
            te += 0.3 * _soft(np.abs(vv - 1.7 * up + 0.045) - 0.008, 2 * px) * span  # lid crease
            t[w] += te
        w, uu, vv = self.area(-0.95, s.brow_v - 0.25, 0.95, s.brow_v + 0.15)  # brows: hair insulates, so cooler
        thick = s.brow_thick * np.clip(1.0 - ((np.abs(uu) - 0.35) / 0.55) ** 2, 0.3, 1.0)
        sd = np.maximum(np.abs(vv - _brow_y(s, uu)) - thick, np.abs(np.abs(uu) - 0.49) - 0.31)
        a = _soft(sd + 0.02 * self.wobble[w], 2.5 * self.px)
        t[w] -= a * (L["brows"] + 0.25 * self.grain_d[w] + 0.3 * self.wobble[w])

    def lips(self, t):
        """Cool lips and the warm line between them, parting as the mouth opens."""
        s, px, mv, mw, mouth_open = self.s, self.px, self.s.mouth_v, self.s.mouth_w, self.pose.mouth_open
        w, uu, vv = self.area(-mw - 0.1, mv - 0.2, mw + 0.1, mv + 0.22)
        prof = np.clip(1.0 - (uu / mw) ** 2, 0, 1)
        gap = 0.08 * mouth_open
        lips = np.maximum(np.maximum(mv - gap / 2 - s.lip_h * prof - vv, vv - mv - gap / 2 - 1.3 * s.lip_h * prof),
                          np.abs(uu) - mw)
        line = np.maximum(np.abs(vv - mv) - (0.008 + gap / 2 * prof), np.abs(uu) - mw)
        t[w] += -LOOK["lips"] * _soft(lips, 2 * px) + (0.9 + 1.2 * mouth_open) * _soft(line, 1.5 * px)

    def beard(self, t):
        """Beard and moustache: insulating hair, cooler and textured."""
        s, px, mv, mw, nb = self.s, self.px, self.s.mouth_v, self.s.mouth_w, self.s.tip_v + 0.11
        if s.beard <= 0:  # clean shaven
            return
        w, uu, vv = self.area(-1.05, s.tip_v, 1.05, self.chin + 0.05)
        au = np.abs(uu)
        inside = _soft(_head_radius(s, uu, vv) - 0.985, 3 * px)
        ragged = 0.05 * self.wobble[w] + 0.012 * self.strands[w]
        prof = np.clip(1.0 - (uu / (mw + 0.06)) ** 2, 0, 1)
        cheeks = _soft(mv - 0.1 - 0.9 * (au - 0.35) - vv + ragged, 4 * px) * _soft(0.3 - au, 4 * px)
        lower = _soft(mv + (1.3 * s.lip_h + 0.03) * prof + 0.01 - vv + ragged, 3 * px)
        tache = _soft(nb + 0.05 - vv + ragged, 3 * px) * _soft(vv - mv + (s.lip_h + 0.02) * prof, 2 * px) * (
            _soft(au - mw - 0.04 + ragged, 3 * px))
        zone = np.maximum(np.maximum(cheeks, lower), tache) * inside * s.beard
        t[w] -= zone * (2.0 + 0.35 * self.grain_d[w] + 0.3 * self.strands_d[w] + 0.4 * self.wobble[w])

    def head_hair(self):
        """Hair on the head, framing the face: cooler at its outer edge, warm where the scalp shows through."""
        s, px, hv = self.s, self.px, self.s.hair_volume
        if s.hair == "bald":
            return
        hw, uu, vv = self.area(-1.2 - hv, self.extent[1], 1.2 + hv, s.v_widest + 0.8)
        rh = _head_radius(s, uu / (1.0 + hv), s.v_widest + (vv - s.v_widest) / (1.0 + 0.8 * hv))
        sd_out = (rh - 1.0) * 1.1 + 0.035 * self.wobble[hw] - 0.012 * self.strands[hw]
        fw = {"short": 0.95, "curly": 0.9, "long": 0.84}[s.hair]  # half width of the face opening
        vc = s.v_widest - (0.1 if s.hair == "short" else -0.3)
        fh = vc - s.hairline
        q = np.where(vv < vc, np.hypot(uu / fw, (vv - vc) / fh), np.abs(uu) / fw)
        sd_open = (q - 1.0) * fh + 0.05 * self.wobble[hw] + 0.008 * self.strands[hw]
        a = _soft(sd_out, 2.5 * px) * _soft(-sd_open, 3 * px)
        if s.hair == "long":  # below the temples the curtains behind the face take over
            a = a * _soft(vv - s.v_widest - 0.6, 0.3)
        edge = np.clip(-sd_out / 0.2, 0, 1)
        warm = 1.0 * np.clip(1.0 - sd_open / 0.3, 0, 1)  # scalp heat shows through near the face
        self.paint(hw, a, self.t_hair[hw] + warm - 1.4 * (1 - edge))

    def glasses(self):
        """Glasses: opaque to long-wave infrared, so the lenses show the cold room; the frame runs warmer."""
        s, px, amb = self.s, self.px, self.amb
        if not s.glasses:
            return
        gw, uu, vv = self.area(-1.05, -0.3, 1.05, 0.32)
        sd_l = None
        for ex in (-s.eye_dx, s.eye_dx):
            q = ((np.abs(uu - ex) / s.glass_w) ** 4 + (np.abs(vv - 0.03) / s.glass_h) ** 4) ** 0.25
            d = (q - 1.0) * min(s.glass_w, s.glass_h)
            sd_l = d if sd_l is None else np.minimum(sd_l, d)
        _over(self.sub[gw], _cov(sd_l, px), amb + 1.3 + 0.6 * _gauss(uu, vv, 0.0, -0.3, 0.6, 0.2))
        inner = s.eye_dx - s.glass_w
        frame = np.minimum(np.abs(sd_l) - 0.018, _capsule_sd(uu, vv, (-inner, -0.02), (inner, -0.02), 0.018))
        frame = np.minimum(frame, np.minimum(
            _capsule_sd(uu, vv, (-(s.eye_dx + s.glass_w), -0.02), (-0.99, 0.02), 0.016),
            _capsule_sd(uu, vv, (s.eye_dx + s.glass_w, -0.02), (0.99, 0.02), 0.016)))
        _over(self.sub[gw], _cov(frame, px), amb + 0.45 * (self.skin - amb))
