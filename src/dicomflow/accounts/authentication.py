"""DRF authentication by ``X-Api-Key: <key>``; it answers 401 (with a challenge) when nothing fits."""

from __future__ import annotations

from rest_framework import authentication, exceptions

from dicomflow.accounts.services import user_from_api_key

HEADER = "HTTP_X_API_KEY"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        key = request.META.get(HEADER)
        if key is None:
            return None  # let session login (the browser) try
        user = user_from_api_key(key.strip())
        if user is None:
            raise exceptions.AuthenticationFailed("the API key is not valid (unknown, revoked or expired)")
        return user, key

    def authenticate_header(self, request) -> str:
        # a WWW-Authenticate value makes DRF answer 401 instead of 403 to anonymous requests
        return 'X-Api-Key realm="dicomflow"'
