"""Paths and folders of a run (config): what a read-only or mistaken artifacts root gets."""
import os
import tempfile

import pytest

from thermsr_utils import config


def test_an_artifacts_root_that_is_a_file_is_named(tmp_path, monkeypatch):
    blocker = tmp_path / "artifacts"
    blocker.write_text("not a folder")
    monkeypatch.setenv("THERMSR_ARTIFACTS", str(blocker))
    with pytest.raises(config.UnwritableFolder, match=rf"{blocker} is a file, not a folder; .*THERMSR_ARTIFACTS"):
        config.setup("smoke", 0)
    assert blocker.read_text() == "not a folder"


def test_a_read_only_artifacts_root_is_named(tmp_path, monkeypatch):
    root = tmp_path / "ro"
    root.mkdir()
    root.chmod(0o500)
    monkeypatch.setenv("THERMSR_ARTIFACTS", str(root))
    if os.geteuid() == 0:   # root writes into read-only folders: refuse the write as the kernel would for a user
        def refuse(*_, **__):
            raise PermissionError(13, "Permission denied")
        monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    try:
        with pytest.raises(config.UnwritableFolder, match=r"ro/smoke is not writable \(Permission denied\); make it"):
            config.setup("smoke", 0)
    finally:
        root.chmod(0o700)


def test_a_writable_root_is_created_with_its_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("THERMSR_ARTIFACTS", str(tmp_path / "new" / "artifacts"))
    paths = config.setup("smoke", 0)
    assert paths.results.is_dir() and paths.figures.is_dir()
    assert list(paths.root.iterdir()) != [] and not list(paths.results.iterdir())   # no probe file left
