"""Routing decisions: modes, sticky and monotonic canary, shadow sampling."""

from __future__ import annotations

import random
from pathlib import Path

from bridge.routing import Route, Router, canary_point
from codeagent.context import current_todo
from feature_flags import ComponentChange, FlagStore, Mode, update_flags


def _store(tmp_path: Path, **modes: ComponentChange) -> FlagStore:
    path = tmp_path / "flags.toml"
    update_flags(path, components=modes, source="cli", reason="test")
    return FlagStore(path)


def test_legacy_new_and_shadow(tmp_path: Path) -> None:
    store = _store(
        tmp_path,
        llm=ComponentChange(mode=Mode.NEW),
        git=ComponentChange(mode=Mode.SHADOW, serve="new"),
    )
    router = Router(store)
    assert router.decide("files").route is Route.LEGACY
    assert router.decide("llm").route is Route.NEW
    shadow = router.decide("git")
    assert shadow.route is Route.SHADOW
    assert shadow.serve == "new"


def test_canary_is_sticky_and_monotonic(tmp_path: Path) -> None:
    ids = [f"t-{i:04d}" for i in range(2000)]
    on_new: dict[int, set[str]] = {}
    for percent in (0, 10, 50, 100):
        store = _store(tmp_path / str(percent), llm=ComponentChange(mode=Mode.CANARY, percent=percent))
        router = Router(store)
        chosen = {t for t in ids if router.decide("llm", t).route is Route.NEW}
        # sticky: asking again gives the same answer
        assert chosen == {t for t in ids if router.decide("llm", t).route is Route.NEW}
        on_new[percent] = chosen
    assert on_new[0] == set()
    assert on_new[100] == set(ids)
    assert on_new[10] <= on_new[50] <= on_new[100]
    assert 120 < len(on_new[10]) < 280  # about 10% of 2000
    assert 850 < len(on_new[50]) < 1150


def test_canary_uses_the_current_todo_and_keeps_calls_outside_todos_on_legacy(tmp_path: Path) -> None:
    store = _store(tmp_path, files=ComponentChange(mode=Mode.CANARY, percent=100))
    router = Router(store)
    assert router.decide("files").route is Route.LEGACY
    token = current_todo.set("t-0001")
    try:
        assert router.decide("files").route is Route.NEW
    finally:
        current_todo.reset(token)


def test_canary_point_is_stable() -> None:
    assert canary_point("llm", "t-0001") == canary_point("llm", "t-0001")
    assert 0 <= canary_point("git", "x") < 100
    assert canary_point("llm", "t-0001") != canary_point("git", "t-0001")


def test_shadow_sampling(tmp_path: Path) -> None:
    path = tmp_path / "flags.toml"
    path.write_text('version = 1\nloop = "legacy"\n[components.todos]\nmode = "shadow"\nsample = 0.25\n')
    router = Router(FlagStore(path), rng=random.Random(7))
    routes = [router.decide("todos").route for _ in range(4000)]
    shadowed = routes.count(Route.SHADOW)
    assert 800 < shadowed < 1200
    assert set(routes) == {Route.SHADOW, Route.LEGACY}
