"""What every desk view shares: login, errors of the services as HTTP answers, paging."""

from __future__ import annotations

from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpResponseRedirect
from django.utils.http import url_has_allowed_host_and_scheme

from dicomflow.errors import DicomflowError, NotFoundError, PermissionDeniedError

PAGE = 50


def desk_view(view):
    """Logged-in only; NotFoundError → 404 and PermissionDeniedError → 403 (the styled pages)."""

    @login_required
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except NotFoundError as exc:
            raise Http404(str(exc)) from None
        except PermissionDeniedError as exc:
            raise PermissionDenied(str(exc)) from None

    return wrapper


def back(request, fallback: str) -> HttpResponseRedirect:
    """Redirect to the page's own ``next`` (same host only) or ``fallback``."""
    target = request.POST.get("next") or request.GET.get("next") or ""
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        target = ""
    return HttpResponseRedirect(target or fallback)


def attempt(request, action, *args, **kwargs):
    """Run a service; its InputError (or other refusal a person can act on) becomes a message on the
    page. Returns the service's value, or None when it refused. Not-found and not-allowed still raise."""
    try:
        return action(*args, **kwargs)
    except (NotFoundError, PermissionDeniedError):
        raise
    except DicomflowError as exc:
        messages.error(request, str(exc))
        return None


def page_of(request, qs, per_page: int = PAGE):
    return Paginator(qs, per_page).get_page(request.GET.get("page"))
