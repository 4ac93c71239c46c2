"""The spool: keys made only of hex, containment, atomic durable writes, owner-only modes."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from factories import hypothesis_outside_the_tree
from storage.spool import (
    Spool,
    SpoolError,
    instance_key,
    output_instance_key,
    output_series_key,
)

hypothesis_outside_the_tree()

HOSTILE = [
    "../../x",
    "/etc/passwd",
    "..",
    ".",
    "",
    "1.2.3\x00../../etc",
    "\x00",
    "9" * 200,
    "1.2.840/../../..",
    "C:\\Windows\\system32",
    "ünïcødé/☢/𝔘𝔦𝔡",
    "instances/00/00/" + "0" * 64 + ".dcm",
]
INSTANCE_KEY = re.compile(r"^instances/[0-9a-f]{2}/[0-9a-f]{64}/[0-9a-f]{64}\.dcm$")
OUTPUT_KEY = re.compile(r"^outputs/[0-9a-f]{2}/[0-9a-f]{64}$")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool")


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The most permissive umask, so that only the spool's own modes protect its files."""
    old = os.umask(0)
    yield
    os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _partials(root: Path) -> list[Path]:
    return sorted(root.rglob("*.partial"))


@pytest.mark.parametrize("uid", HOSTILE, ids=repr)
def test_hostile_uids_give_hex_keys_that_stay_inside_the_spool(spool: Spool, uid: str) -> None:
    for key in (
        instance_key(uid, "1.2", "1.3"),
        instance_key("1.2", uid, "1.3"),
        instance_key("1.2", "1.3", uid),
    ):
        assert INSTANCE_KEY.match(key), key
        assert spool.path(key).is_relative_to(spool.root)
        spool.write(key, b"DICM")
        assert spool.read(key) == b"DICM"
    series_key = output_series_key(uid)
    assert OUTPUT_KEY.match(series_key)
    assert spool.path(output_instance_key(series_key, 3)).is_relative_to(spool.root)
    assert output_instance_key(series_key, 3).endswith("/00003.dcm")


_texts = st.text(max_size=300)


@settings(
    database=None,  # no example database written into the working tree
    max_examples=200,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(study=_texts, series=_texts, sop=_texts)
def test_any_text_uids_give_hex_keys_inside_the_spool(
    spool: Spool, study: str, series: str, sop: str
) -> None:
    key = instance_key(study, series, sop)
    assert INSTANCE_KEY.match(key)
    assert spool.path(key).parent.is_relative_to(spool.root / "instances")


def test_keys_are_deterministic_and_distinct_per_instance() -> None:
    assert instance_key("1.2", "1.3", "1.4") == instance_key("1.2", "1.3", "1.4")
    keys = {
        instance_key("1.2", "1.3", "1.4"),
        instance_key("1.2", "1.3", "1.5"),
        instance_key("1.2", "1.4", "1.4"),
        instance_key("1.3", "1.3", "1.4"),
        instance_key("1.2.1", "3", "1.4"),  # the parts are not simply concatenated
        instance_key("1.2", "1.31.4", ""),
    }
    assert len(keys) == 6
    assert output_series_key("1.2") != output_series_key("1.3")
    assert output_series_key("1.2") == output_series_key("1.2")


@pytest.mark.parametrize(
    "key",
    ["../x", "../../etc/passwd", "/etc/passwd", "instances/../../x", "..", "a/b/../../../c"],
)
def test_path_refuses_a_key_that_leaves_the_spool(spool: Spool, key: str) -> None:
    with pytest.raises(SpoolError, match="leaves the spool"):
        spool.path(key)
    with pytest.raises(SpoolError, match="leaves the spool"):
        spool.write(key, b"x")
    assert not (spool.root.parent / "x").exists()


def test_path_refuses_a_symlink_that_points_out_of_the_spool(spool: Spool, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (spool.root / "instances").symlink_to(outside)
    with pytest.raises(SpoolError, match="leaves the spool"):
        spool.path("instances/ab/cd/x.dcm")


def test_path_accepts_keys_that_stay_inside(spool: Spool) -> None:
    assert spool.path("instances/../outputs/x") == spool.root / "outputs" / "x"
    assert spool.path("instances/ab/cd/e.dcm") == spool.root / "instances/ab/cd/e.dcm"


def test_write_creates_owner_only_folders_and_files_whatever_the_umask(
    spool: Spool, open_umask: None
) -> None:
    key = instance_key("1.2", "1.3", "1.4")
    out_key = output_instance_key(output_series_key("1.5"), 0)
    for k in (key, out_key):
        assert spool.write(k, b"data") == 4
        path = spool.path(k)
        assert _mode(path) == 0o600, k
        folder = path.parent
        while True:
            assert _mode(folder) == 0o700, folder
            if folder == spool.root:
                break
            folder = folder.parent


def test_spool_root_is_made_owner_only_even_when_it_existed(tmp_path: Path) -> None:
    root = tmp_path / "existing"
    root.mkdir(mode=0o755)
    os.chmod(root, 0o755)
    Spool(root)
    assert _mode(root) == 0o700


def test_rewrite_replaces_the_content_and_leaves_no_temporary_file(spool: Spool) -> None:
    key = instance_key("1.2", "1.3", "1.4")
    spool.write(key, b"first version, longer")
    assert spool.write(key, memoryview(b"second")) == 6
    assert spool.read(key) == b"second"
    assert spool.exists(key)
    assert _partials(spool.root) == []


def test_failed_rename_leaves_old_content_and_no_temporary_file(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = instance_key("1.2", "1.3", "1.4")
    spool.write(key, b"acknowledged")
    renames: list[tuple[Path, Path]] = []

    def failing_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        renames.append((Path(src), Path(dst)))
        assert Path(src).read_bytes() == b"replacement"  # written in full before the rename
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(SpoolError, match=re.escape(f"cannot write {key}")):
        spool.write(key, b"replacement")
    monkeypatch.undo()

    (src, dst), *_ = renames
    assert dst == spool.path(key)
    assert src.parent == dst.parent
    assert re.fullmatch(rf"\.{re.escape(dst.name)}\.\d+\.\d+\.partial", src.name)
    assert spool.read(key) == b"acknowledged"
    assert _partials(spool.root) == []


def _failing_fsync(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Makes every ``os.fsync`` fail with EIO, as a disk that lost the write would;
    returns the descriptors it was called with. A failed fsync cannot be produced on
    demand with a real disk, hence the stand-in."""
    calls: list[int] = []

    def failing(fd: int) -> None:
        calls.append(fd)
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing)
    return calls


def test_failed_fsync_of_a_replacement_leaves_the_acknowledged_copy(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = instance_key("1.2", "1.3", "1.4")
    spool.write(key, b"acknowledged")
    calls = _failing_fsync(monkeypatch)
    with pytest.raises(SpoolError, match=re.escape(f"cannot write {key}")):
        spool.write(key, b"replacement, never made durable")
    monkeypatch.undo()

    assert calls
    assert spool.read(key) == b"acknowledged"
    assert _partials(spool.root) == []


def test_failed_fsync_of_a_new_file_leaves_no_file_to_index(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool.write(instance_key("1.2", "1.3", "1.4"), b"another instance of the study")
    key = instance_key("1.2", "1.3", "1.5")  # same study folder: only the file's fsync fails
    _failing_fsync(monkeypatch)
    with pytest.raises(SpoolError, match=re.escape(f"cannot write {key}")):
        spool.write(key, b"never made durable")
    monkeypatch.undo()

    assert not spool.exists(key)
    assert list(spool.instance_files()) == [instance_key("1.2", "1.3", "1.4")]
    assert _partials(spool.root) == []


def test_write_that_hits_the_file_size_limit_fails_without_a_partial_or_a_final_file(
    spool: Spool,
) -> None:
    """A real short write (RLIMIT_FSIZE, as on a full disk) in a child process."""
    key = instance_key("1.2", "1.3", "1.4")
    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        from pathlib import Path
        from storage.spool import Spool, SpoolError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        spool = Spool(Path({str(spool.root)!r}))
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, resource.RLIM_INFINITY))
        try:
            spool.write({key!r}, b"x" * 1_000_000)
        except SpoolError as exc:
            print("SpoolError", exc)
            sys.exit(0)
        sys.exit("write succeeded past the file size limit")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert f"cannot write {key}" in result.stdout
    assert not spool.exists(key)
    assert _partials(spool.root) == []


def test_crash_before_rename_leaves_only_a_partial_that_start_up_removes(spool: Spool) -> None:
    key = instance_key("1.2", "1.3", "1.4")
    script = textwrap.dedent(
        f"""
        import os
        from pathlib import Path
        from storage.spool import Spool
        os.replace = lambda src, dst: os._exit(9)  # the process dies before the rename
        Spool(Path({str(spool.root)!r})).write({key!r}, b"half-acknowledged")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 9, result.stderr
    assert not spool.exists(key)
    (partial,) = _partials(spool.root)
    assert partial.read_bytes() == b"half-acknowledged"
    assert list(spool.instance_files()) == []

    assert spool.remove_partials() == 1
    assert _partials(spool.root) == []
    assert spool.remove_partials() == 0


def test_instance_files_lists_only_received_instance_files(spool: Spool) -> None:
    assert list(spool.instance_files()) == []
    keys = sorted(instance_key("1.2", "1.3", f"1.4.{i}") for i in range(5))
    for k in reversed(keys):
        spool.write(k, b"i")
    series_key = output_series_key("2.25.1")
    spool.write(output_instance_key(series_key, 0), b"o")
    leftover = spool.path(keys[0]).parent / f".{spool.path(keys[0]).name}.1.2.partial"
    leftover.write_bytes(b"p")
    (spool.path(keys[1]).parent / "notes.txt").write_text("n")

    assert list(spool.instance_files()) == keys
