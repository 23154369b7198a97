"""Content-hash task caching: keys follow file contents and configs, and a rerun resumes."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from prefect import flow, task
from pydantic import BaseModel

from flows.caching import code_version, fingerprint, input_key, persisted, stage_dir


class _Cfg(BaseModel):
    source: Path
    size: int = 8


def test_file_fingerprint_follows_content_not_mtime(tmp_path: Path) -> None:
    f = tmp_path / "a.csv"
    f.write_text("x\n1\n")
    first = input_key("s", {"f": f})
    f.write_text("x\n2\n")
    assert input_key("s", {"f": f}) != first
    f.write_text("x\n1\n")
    assert input_key("s", {"f": f}) == first


def test_config_paths_are_content_hashed(tmp_path: Path) -> None:
    f = tmp_path / "labels.csv"
    f.write_text("a")
    key = input_key("s", {"cfg": _Cfg(source=f)})
    assert input_key("s", {"cfg": _Cfg(source=f, size=9)}) != key
    f.write_text("b")
    assert input_key("s", {"cfg": _Cfg(source=f)}) != key


def test_folder_fingerprint_sees_new_files_and_locations_do_not(tmp_path: Path) -> None:
    images, work = tmp_path / "images", tmp_path / "work"
    images.mkdir()
    work.mkdir()
    inputs = {"images": images, "work_dir": work}
    as_content = input_key("s", inputs)
    as_location = input_key("s", inputs, locations=("work_dir",))
    (work / "output.bin").write_text("written by the stage")
    assert input_key("s", inputs) != as_content
    assert input_key("s", inputs, locations=("work_dir",)) == as_location
    (images / "new.jpg").write_bytes(b"x")
    assert input_key("s", inputs, locations=("work_dir",)) != as_location


def test_stage_name_is_part_of_the_key(tmp_path: Path) -> None:
    assert stage_dir(tmp_path, "train", n=1).name != stage_dir(tmp_path, "calibrate", n=1).name
    assert stage_dir(tmp_path, "train", n=1).parent == tmp_path / "train"


def test_code_version_names_package_commit_and_sources() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*\+[0-9a-z]{5,12}\.[0-9a-f]{12}", code_version())
    assert code_version.__wrapped__() == code_version(), "deterministic"


def test_data_objects_are_refused() -> None:
    with pytest.raises(TypeError, match="DataFrame"):
        fingerprint({"df": pd.DataFrame({"a": [1]})})


@task
def _count(source: Path, out_dir: Path) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "calls.txt").open("a") as fh:
        fh.write(source.read_text() + "\n")
    return source.read_text().upper()


@task
def _maybe_fail(text: str, fail: bool) -> str:
    if fail:
        raise RuntimeError("stage two broke")
    return text + "!"


@flow
def _two_stages(source: Path, work_dir: Path, fail: bool) -> str:
    first = persisted(_count, work_dir)(source, work_dir / "calls")
    return persisted(_maybe_fail, work_dir)(first, fail)


def test_rerun_after_failure_resumes_from_the_finished_stage(tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("abc")
    work = tmp_path / "work"

    def calls() -> list[str]:
        return (work / "calls" / "calls.txt").read_text().split()

    with pytest.raises(RuntimeError, match="stage two broke"):
        _two_stages(source, work, fail=True)
    assert calls() == ["abc"]
    assert _two_stages(source, work, fail=False) == "ABC!"
    assert calls() == ["abc"], "the first stage ran again instead of coming from the cache"
    source.write_text("xyz")
    assert _two_stages(source, work, fail=False) == "XYZ!"
    assert calls() == ["abc", "xyz"]
    assert any((tmp_path / "work" / "results").iterdir())
