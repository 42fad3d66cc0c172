from __future__ import annotations

import pytest

from medsynth.errors import MedsynthError
from medsynth.io.files import atomic_path, nifti_stem, prepare_output_dir, safe_name, unique_names


@pytest.mark.parametrize("text", ["../../etc/passwd", "/abs/path", "a\\b", "con\x00trol\n", "..", "." * 5,
                                  "x" * 500, "Ünïcødé séries", ""])
def test_safe_name_stays_in_its_folder(tmp_path, text):
    name = safe_name(text)
    assert name and len(name) <= 64 and "/" not in name and "\\" not in name and ".." not in name
    assert name.isprintable() and not name.startswith(".")
    assert (tmp_path / name).resolve().parent == tmp_path.resolve()


def test_unique_names():
    assert unique_names(["a", "b", "a", "a_2", "a"]) == ["a", "b", "a_3", "a_2", "a_4"]


def test_nifti_stem():
    assert nifti_stem("/x/case_0001.nii.gz") == "case_0001" and nifti_stem("y.NII") == "y"


def test_atomic_path_keeps_old_content_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_output_inside_input_is_refused(tmp_path):
    (tmp_path / "in").mkdir()
    with pytest.raises(MedsynthError, match="inside the input"):
        prepare_output_dir(tmp_path / "in" / "out", tmp_path / "in")
    assert not (tmp_path / "in" / "out").exists()


def test_unwritable_output(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(MedsynthError, match="not writable|not a folder"):
        prepare_output_dir(tmp_path / "file" / "out")
    with pytest.raises(MedsynthError, match="not a folder"):
        prepare_output_dir(tmp_path / "file")
