""".dvc files of new stages written by PyYAML's C emitter instead of ruamel's Python one.

DVC writes a stage file through ruamel.yaml's round-trip dumper: 0.68 ms for the four
lines of a batch's .dvc file against 0.05 ms with PyYAML's `CSafeDumper` (measured 7
Dec), about a sixth of an add. The text is the same for such a file; what matters is
that DVC reads back what it meant, and DVC reads with ruamel's YAML 1.2 rules while
PyYAML quotes by YAML 1.1's. They differ on a few plain scalars (`123e45` is a number
in 1.2 and text in 1.1), so a value that ruamel would read as anything but text, any
type other than plain dicts, lists, text, integers and booleans (a stage DVC loaded
keeps its comments in ruamel's own types), or any call DVC makes with other options
goes to DVC's own dumper, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import yaml

_STR = "tag:yaml.org,2002:str"
# PyYAML built without libyaml has no C emitter (DVC's dumper then writes every file)
# and no C loader (PyYAML's Python one reads).
_C_DUMPER = getattr(yaml, "CSafeDumper", None)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load(text: str) -> Any:  # noqa: ANN401 - the parsed YAML
    """A .dvc file's content, read with PyYAML's C loader when it has one: a replay of a
    stream DVC already tracks reads one for every batch."""
    return yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader, C or Python


def plain_yaml(data: Any) -> str | None:  # noqa: ANN401 - DVC's stage dictionary
    """The YAML text DVC would write for `data`, or None when this writer is not sure."""
    strings: list[str] = []
    if _C_DUMPER is None or not _collect_strings(data, strings):
        return None
    if not all(map(_read_as_text, strings)):
        return None
    return yaml.dump(data, Dumper=_C_DUMPER, default_flow_style=False,
                     sort_keys=False, allow_unicode=True)


def _collect_strings(value: Any, into: list[str]) -> bool:  # noqa: ANN401
    """False for a value of any other type than these (exactly: no subclasses)."""
    kind = type(value)
    if kind is dict:
        return all(_collect_strings(k, into) and _collect_strings(v, into)
                   for k, v in value.items())
    if kind is list:
        return all(_collect_strings(v, into) for v in value)
    if kind is str:
        into.append(value)
        return True
    return kind in (int, bool)


def _read_as_text(text: str) -> bool:
    """True if ruamel (YAML 1.2, as DVC loads) reads `text`, written plain, as text."""
    from ruamel.yaml.nodes import ScalarNode

    return _resolver().resolve(ScalarNode, text, (True, False)) == _STR


@cache
def _resolver() -> Any:  # noqa: ANN401 - ruamel's VersionedResolver
    from ruamel.yaml.resolver import VersionedResolver

    return VersionedResolver()


def write_stage_file(path: Path | str, data: dict[str, Any]) -> None:
    """A new .dvc file holding `data`, written as DVC writes it."""
    text = plain_yaml(data)
    if text is None:
        from dvc.utils.serialize import dump_yaml  # not the name `fast_stage_files` patches

        dump_yaml(path, data)
        return
    with open(path, "w+", encoding="utf-8") as fd:  # as DVC's _dump_data opens it
        fd.write(text)


@contextmanager
def fast_stage_files() -> Iterator[None]:
    """While held (under the caller's DVC lock), DVC's stage-file writes go through
    `plain_yaml` when it is sure, and through DVC's own dumper otherwise."""
    import dvc.dvcfile

    original: Callable[..., Any] = dvc.dvcfile.dump_yaml

    def dump_yaml(path: Any, data: Any, fs: Any = None, **kwargs: Any) -> Any:  # noqa: ANN401
        if fs is not None or kwargs:
            return original(path, data, fs=fs, **kwargs)
        write_stage_file(path, data)  # DVC's dumper where `plain_yaml` is not sure
        return None

    dvc.dvcfile.dump_yaml = dump_yaml
    try:
        yield
    finally:
        dvc.dvcfile.dump_yaml = original
