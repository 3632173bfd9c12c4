from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """A refused form post, explained in the portal's own page (nothing was changed)."""
    return render(request, "403_csrf.html", status=403)
