"""Azure Functions entry point (Python v2 programming model).

It stays thin: the SCIM HTTP endpoint lives in :mod:`scim.functions.http_adapter`, the change
events feed in :mod:`scim.functions.events_adapter`, the OAuth 2.0 token endpoint in
:mod:`scim.functions.oauth_adapter`, the failure digest and retention timer in
:mod:`scim.functions.timer_adapter`, the webhook delivery timer in
:mod:`scim.functions.delivery_adapter` and the health check in
:mod:`scim.functions.health_adapter`, each as a blueprint. The settings are checked here,
so that a setting the app cannot use (or, in Azure, no table storage at all) stops the host at
start-up with an error naming it, rather than failing every request later.
Importing this module must stay cheap (cold starts): heavy modules load on first use.
"""

import azure.functions as func

from scim.functions.delivery_adapter import bp as webhook_timer
from scim.functions.events_adapter import bp as events_http
from scim.functions.health_adapter import bp as health_http
from scim.functions.http_adapter import bp as scim_http
from scim.functions.oauth_adapter import bp as oauth_http
from scim.functions.portal_adapter import bp as portal_http
from scim.functions.timer_adapter import bp as notify_timer
from scim.settings import Settings

Settings.from_env()

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
app.register_functions(scim_http)
app.register_functions(events_http)
app.register_functions(oauth_http)
app.register_functions(portal_http)
app.register_functions(notify_timer)
app.register_functions(webhook_timer)
app.register_functions(health_http)
