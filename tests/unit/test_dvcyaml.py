"""The .dvc files of new stages written by PyYAML's C emitter (tasks/dvcyaml.py): the
same text DVC's own dumper writes, read back by DVC as the stage it meant, and DVC's
dumper wherever the two YAML versions could read a value differently."""

from __future__ import annotations

import io
import random
from pathlib import Path

from dvc.utils.serialize._yaml import _dump, parse_yaml

from tasks import versioning
from tasks.dvcyaml import plain_yaml, write_stage_file


def _dvcs_text(data: dict) -> str:
    out = io.StringIO()
    _dump(data, out)
    return out.getvalue()


def _stage(md5: str, size: int, path: str) -> dict:
    return {"outs": [{"md5": md5, "size": size, "hash": "md5", "path": path}]}


def test_a_batch_stage_is_written_as_dvc_writes_it() -> None:
    rng = random.Random(3)
    for _ in range(300):
        md5 = "".join(rng.choice("0123456789abcdef") for _ in range(32))
        data = _stage(md5, rng.randrange(10**9), f"{md5[:24]}.parquet")
        text = plain_yaml(data)
        assert text == _dvcs_text(data)
        assert parse_yaml(text, "x.dvc") == data


def test_values_yaml_versions_read_differently_go_to_dvcs_dumper() -> None:
    # Plain in YAML 1.1 (PyYAML's rules), a number or null in 1.2 (how DVC reads).
    for md5 in ("12345678901234567890123456789e12", "1_000", "0o17", ".5"):
        assert plain_yaml(_stage(md5, 1, "a.parquet")) is None
    # ruamel's own types (a stage DVC loaded keeps its comments in them): not ours.
    from ruamel.yaml.comments import CommentedMap

    assert plain_yaml(CommentedMap(outs=[])) is None
    assert plain_yaml({"outs": [{"md5": "ab", "size": 1.5}]}) is None  # floats: DVC's


def test_an_ambiguous_md5_still_reads_back_as_text(tmp_path: Path, monkeypatch) -> None:
    """The whole add on DVC's stage path, with DVC's hash of the file replaced by one
    YAML 1.2 reads as a number unless quoted: the .dvc file DVC reads back names the same
    md5, as text."""
    monkeypatch.setattr(versioning, "_plain_new_file", lambda *_args: False)
    versioning.ensure_repo(tmp_path)
    path = tmp_path / "data" / "a.parquet"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x" * 100)
    ambiguous = "12345678901234567890123456789e12"
    import dvc.dvcfile

    original = dvc.dvcfile.serialize.to_single_stage_file

    def with_ambiguous_md5(stage, **kwargs):  # noqa: ANN001, ANN202
        data = original(stage, **kwargs)
        data["outs"][0]["md5"] = ambiguous
        return data

    monkeypatch.setattr(dvc.dvcfile.serialize, "to_single_stage_file", with_ambiguous_md5)
    monkeypatch.setattr(versioning, "_recorded_md5", lambda _path: None)
    versioning.dvc_add(tmp_path, path)
    text = path.with_name("a.parquet.dvc").read_text()
    assert parse_yaml(text, "a.parquet.dvc")["outs"][0]["md5"] == ambiguous


def test_a_stage_file_with_an_ambiguous_md5_reads_back_as_text(tmp_path: Path) -> None:
    """What a batch's add writes (`write_stage_file`): DVC's dumper quotes what PyYAML's
    would leave plain, so DVC reads the md5 back as the text it was."""
    for md5 in ("12345678901234567890123456789e12", "a" * 32):
        data = _stage(md5, 7, "a.parquet")
        write_stage_file(tmp_path / "a.parquet.dvc", data)
        text = (tmp_path / "a.parquet.dvc").read_text()
        assert text == _dvcs_text(data)
        assert parse_yaml(text, "a.parquet.dvc") == data
