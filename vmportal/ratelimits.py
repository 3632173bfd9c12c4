"""Per-user rate limits on actions that are expensive or reach hypervisors.

The limits themselves are settings (`settings.RATE_LIMITS`, from VMPORTAL_RATE_*); the counters live in
the shared cache (Redis), so they hold across every web process.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django_ratelimit.core import is_ratelimited

#: limit group → what the person was trying to do, for the refusal page
ACTIONS = {
    "plan-create": "create plans",
    "plan-audit": "run audits again",
    "host-test": "test host connections",
}


def over_limit(request: HttpRequest, group: str) -> bool:
    """Count this request against the user's limit for `group`; True once the limit is passed."""
    return bool(
        is_ratelimited(
            request, group=group, key="user", rate=settings.RATE_LIMITS[group], method="POST", increment=True
        )
    )


def refusal(request: HttpRequest, group: str) -> HttpResponse:
    """429 with a page that says what was refused, why, and that nothing changed."""
    count, _, period = settings.RATE_LIMITS[group].partition("/")
    return render(
        request,
        "429.html",
        {"action": ACTIONS[group], "count": count, "period": period},
        status=429,
    )
