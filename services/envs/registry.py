"""Which environments a server can host, by name."""

from __future__ import annotations

from collections.abc import Callable

from services.envs.base import Environment
from shared.settings import EnvServiceSettings


def _alfworld(settings: EnvServiceSettings) -> Environment:
    from services.envs.alfworld import AlfworldEnvironment  # the engine is heavy: import on demand

    return AlfworldEnvironment.from_settings(settings)


def _webshop(settings: EnvServiceSettings) -> Environment:
    from services.envs.webshop import WebshopEnvironment

    return WebshopEnvironment.from_settings(settings)


def _searchqa(settings: EnvServiceSettings) -> Environment:
    from services.envs.searchqa.env import SearchQAEnvironment

    return SearchQAEnvironment.from_settings(settings)


def _counter(settings: EnvServiceSettings) -> Environment:
    from services.envs.counter import CounterEnvironment

    return CounterEnvironment()


FACTORIES: dict[str, Callable[[EnvServiceSettings], Environment]] = {
    "alfworld": _alfworld,
    "counter": _counter,
    "searchqa": _searchqa,
    "webshop": _webshop,
}


def build_envs(settings: EnvServiceSettings) -> dict[str, Environment]:
    unknown = sorted(set(settings.envs) - set(FACTORIES))
    if unknown:
        raise ValueError(f"unknown env(s) {unknown}; known: {sorted(FACTORIES)}")
    return {name: FACTORIES[name](settings) for name in settings.envs}
