"""DRF authentication by ``X-Api-Key: <key>``; it answers 401 (with a challenge) when nothing fits.

Wrong keys count as failed logins (``accounts.throttle``): after ``DICOMFLOW_LOGIN_FAILURE_LIMIT`` of
them from one address (or for one key prefix) every key from there is refused with 429 until the
lockout ends, the right one included."""

from __future__ import annotations

from rest_framework import authentication, exceptions

from dicomflow.accounts import throttle
from dicomflow.accounts.services import user_from_api_key

HEADER = "HTTP_X_API_KEY"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        key = request.META.get(HEADER)
        if key is None:
            return None  # let session login (the browser) try
        key = key.strip()
        django_request = getattr(request, "_request", request)
        credentials = throttle.key_credentials(key)
        if throttle.locked(django_request, credentials):
            raise exceptions.Throttled(detail=throttle.message())
        user = user_from_api_key(key)
        if user is None:
            throttle.key_failed(django_request, credentials)
            raise exceptions.AuthenticationFailed("the API key is not valid (unknown, revoked or expired)")
        return user, key

    def authenticate_header(self, request) -> str:
        # a WWW-Authenticate value makes DRF answer 401 instead of 403 to anonymous requests
        return 'X-Api-Key realm="dicomflow"'
