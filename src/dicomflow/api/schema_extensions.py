"""OpenAPI descriptions drf-spectacular cannot infer: the X-Api-Key security scheme."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "dicomflow.accounts.authentication.ApiKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "header", "name": "X-Api-Key",
                "description": "A personal API key (web page 'API keys' or `dicomflow apikey create USER`)."}
