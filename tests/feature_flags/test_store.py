"""The flag store keeps the last good flags when the file goes bad, and tells listeners of changes."""

from __future__ import annotations

from pathlib import Path

from feature_flags import FlagSet, FlagStore, Mode

from .test_loader import CORPUS


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_no_file_means_everything_legacy(tmp_path: Path) -> None:
    store = FlagStore(tmp_path / "flags.toml")
    assert store.flags.loop == "legacy"
    assert all(store.flags.flag(c).mode is Mode.LEGACY for c in ("llm", "git"))
    assert store.last_error is None


def test_every_malformed_edit_keeps_the_last_good_flags(tmp_path: Path) -> None:
    path = tmp_path / "flags.toml"
    _write(path, 'version = 1\nloop = "async"\n[components.llm]\nmode = "new"\n')
    store = FlagStore(path)
    good = store.flags
    assert good.flag("llm").mode is Mode.NEW
    for name, text, *_ in CORPUS:
        _write(path, text)
        result = store.reload()
        assert result.error is not None, name
        assert store.flags is good, name
        assert store.last_error is result.error
    path.write_bytes(b"\x00\x01\x02binary")
    assert store.reload().error is not None
    assert store.flags is good
    path.unlink()
    assert store.reload().error is not None
    assert store.flags is good


def test_listeners_see_old_and_new_and_errors_clear(tmp_path: Path) -> None:
    path = tmp_path / "flags.toml"
    _write(path, 'version = 1\nloop = "legacy"\n')
    store = FlagStore(path)
    seen: list[tuple[FlagSet, FlagSet]] = []
    store.subscribe(lambda old, new: seen.append((old, new)))

    def broken(old: FlagSet, new: FlagSet) -> None:
        raise RuntimeError("listener bug")

    store.subscribe(broken)
    _write(path, "not toml = = =")
    store.reload()
    assert store.last_error is not None
    _write(path, 'version = 1\nloop = "async"\n')
    assert store.reload().error is None
    assert store.last_error is None
    assert [(o.loop, n.loop) for o, n in seen] == [("legacy", "async")]
    # reloading identical content notifies nobody
    store.reload()
    assert len(seen) == 1
