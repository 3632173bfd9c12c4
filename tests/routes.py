"""Every URL the portal serves, generated from the URL resolver, so a new URL cannot be forgotten.

`routes()` walks the resolver (the portal's pages, the Django admin with every registered model, the
job-queue pages) and returns each pattern with the names of the values it needs. `fill()` turns a route
into concrete URLs from a dictionary of sample values; a route needing a value the dictionary lacks
makes it fail loudly, naming the value — add one to the test's samples and decide what the new URL may do.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.urls.resolvers import RoutePattern


@dataclass(frozen=True)
class Route:
    name: str  # "namespace:name", or "" for an unnamed pattern
    pattern: str  # the full pattern, for messages
    params: tuple[str, ...]  # the keyword arguments it needs
    callback: Callable[..., Any]


def _params(pattern: Any) -> list[str]:
    if isinstance(pattern, RoutePattern):
        return list(pattern.converters)
    return list(pattern.regex.groupindex)


def routes() -> list[Route]:
    found: list[Route] = []

    def walk(patterns: list[Any], prefix: str, namespace: str, params: list[str]) -> None:
        for entry in patterns:
            here = params + _params(entry.pattern)
            text = prefix + str(entry.pattern)
            if isinstance(entry, URLResolver):
                ns = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
                walk(entry.url_patterns, text, ns, here)
            elif isinstance(entry, URLPattern):
                name = f"{namespace}{entry.name}" if entry.name else ""
                found.append(Route(name, text, tuple(dict.fromkeys(here)), entry.callback))

    walk(get_resolver().url_patterns, "/", "", [])
    return found


def fill(route: Route, samples: dict[str, list[Any]], unnamed: dict[str, list[str]]) -> list[str]:
    """Concrete URLs for a route: one per sample value of its first multi-valued parameter."""
    if not route.name and route.pattern in unnamed:
        return unnamed[route.pattern]
    missing = [p for p in route.params if p not in samples]
    assert not missing, f"no sample value for {missing} in {route.name or 'the unnamed'} ({route.pattern})"
    if not route.name:
        assert not re.search(r"[\^$(\\]", route.pattern), f"no sample path for the URL pattern {route.pattern!r}"
        return [re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(samples[m.group(1)][0]), route.pattern)]
    urls = [{}]  # type: list[dict[str, Any]]
    for param in route.params:
        urls = [{**u, param: v} for u in urls for v in samples[param]]
    result = []
    for kwargs in urls:
        try:
            result.append(reverse(route.name, kwargs=kwargs))
        except Exception:  # noqa: S112 - a sample that does not fit this pattern (e.g. another app label)
            continue
    assert result, f"none of the sample values fit {route.name} ({route.pattern})"
    return result
