"""Recipe v3's task terms: RetinaFace in torch as onnxruntime runs it, and terms that measure what they claim."""
import cv2
import numpy as np
import pytest
import torch

from conftest import astronaut_face_crops
from thermsr_utils import data, downstream, taskloss

@pytest.fixture(scope="module")
def faces_bgr():
    """Four 96×96 crops around the astronaut's face (pad 1.3-2 × the face): faces RetinaFace finds."""
    return astronaut_face_crops((1.3, 1.5, 1.7, 2.0), size=96)


@pytest.fixture(scope="module")
def face():
    return taskloss.RetinaFaceTorch()


def test_retinaface_in_torch_matches_onnxruntime(face, faces_bgr):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (2, 64, 96, 3), dtype=np.uint8)      # another size, no face
    ort = downstream.RetinaFaceNose()
    for images in (faces_bgr, noise):
        gap = taskloss.match_onnxruntime(face, ort, images)
        assert set(gap) == {"loc", "score", "landmarks"}
        assert max(gap.values()) < 1e-4, gap
    # the check can fail: a different input (one grey level brighter) moves the outputs by more than 1e-4
    brighter = np.clip(faces_bgr.astype(int) + 1, 0, 255).astype(np.uint8)
    want = ort._raw(faces_bgr)
    with torch.no_grad():
        got = face(data.bgr_to_tensor(brighter))
    assert max(float(np.abs(g.numpy() - w).max()) for g, w in zip(got, want)) > 1e-4


def test_landmarks_in_pixels_equal_the_instruments_decoding(face, faces_bgr):
    h, w = faces_bgr.shape[1:3]
    loc, _, lm = downstream.RetinaFaceNose()._raw(faces_bgr)
    with torch.no_grad():
        mine = face.landmarks_px(torch.as_tensor(lm), h, w)
    for i in range(len(faces_bgr)):
        _, pts = downstream.retinaface_decode(loc[i], lm[i], h, w)
        assert np.abs(mine[i].double().numpy() - pts).max() < 1e-3


def test_landmark_term_is_zero_on_hr_grows_with_a_shift_and_reaches_sr_only(face, faces_bgr):
    hr = data.bgr_to_tensor(faces_bgr)
    term = taskloss.landmark_term(face)
    assert float(term(hr, hr)) < 0.01                         # only the eps of the square root is left
    shifted = {k: float(term(torch.roll(hr, k, dims=-1), hr)) for k in (1, 3)}
    assert 0.5 < shifted[1] < shifted[3] < 6.0, shifted           # pixels: a 1-px move reads as about a pixel
    sr = torch.roll(hr, 2, dims=-1).clone().requires_grad_(True)
    term(sr, hr).backward()
    assert sr.grad is not None and float(sr.grad.abs().sum()) > 0
    assert all(p.grad is None and not p.requires_grad for p in face.parameters())
    face.train()
    assert not face.training and not face.net.training              # the judge never leaves eval mode


def test_landmark_term_is_zero_where_no_face_is_seen(face):
    flat = torch.full((2, 3, 64, 64), 0.5)
    sr = torch.rand(2, 3, 64, 64, requires_grad=True)
    value = taskloss.landmark_term(face)(sr, flat)
    assert float(value) == 0.0
    value.backward()                                   # a batch without faces still trains (zero gradient)
    assert float(sr.grad.abs().sum()) == 0.0


def test_feature_term_is_zero_on_hr_and_grows_with_blur(face, faces_bgr):
    hr = data.bgr_to_tensor(faces_bgr)
    term = taskloss.feature_term(face)
    assert float(term(hr, hr)) == 0.0
    blur = {s: data.bgr_to_tensor(np.stack([cv2.GaussianBlur(x, (0, 0), s) for x in faces_bgr])) for s in (0.7, 2.0)}
    assert 0 < float(term(blur[0.7], hr)) < float(term(blur[2.0], hr))
    assert set(taskloss.feature_layers(face)) == set(taskloss.FEATURE_STAGES)


def test_make_term_refuses_an_unknown_term():
    with pytest.raises(ValueError, match="unknown task term 'nose'.*landmarks, features"):
        taskloss.make_term("nose")
