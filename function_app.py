"""Azure Functions entry point (Python v2 programming model).

It stays thin: the SCIM HTTP endpoint lives in :mod:`scim.http_adapter` as a blueprint.
Importing this module must stay cheap (cold starts): heavy modules load on first use.
"""

import azure.functions as func

from scim.http_adapter import bp as scim_http

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
app.register_functions(scim_http)
