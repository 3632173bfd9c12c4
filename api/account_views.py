"""The user's own page of API tokens: create (the secret is shown once) and revoke."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from api import tokens
from api.models import ApiToken


@login_required
def token_list(request: HttpRequest) -> HttpResponse:
    secret = None
    if request.method == "POST":
        try:
            token, secret = tokens.create(request.user, request.POST.get("name", ""))
        except tokens.TokenError as exc:
            messages.error(request, str(exc))
            return redirect("account_tokens")
    mine = ApiToken.objects.filter(user_id=request.user.pk or 0).order_by("revoked_at", "-created_at")
    return render(request, "account/tokens.html", {"tokens": mine, "secret": secret})


@login_required
@require_POST
def token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    token = ApiToken.objects.filter(pk=pk, user_id=request.user.pk or 0).first()
    if token is None:
        raise Http404("No such token of yours.")
    tokens.revoke(request.user, token)
    messages.success(request, f"Token “{token.name}” revoked; scripts using it are refused from now on.")
    return redirect("account_tokens")
