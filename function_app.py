"""Azure Functions entry point (Python v2 programming model).

It stays thin: the SCIM HTTP endpoint lives in :mod:`scim.http_adapter` and the failure
digest timer in :mod:`scim.timer_adapter`, each as a blueprint.
Importing this module must stay cheap (cold starts): heavy modules load on first use.
"""

import azure.functions as func

from scim.http_adapter import bp as scim_http
from scim.timer_adapter import bp as notify_timer

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
app.register_functions(scim_http)
app.register_functions(notify_timer)
