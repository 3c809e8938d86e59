"""The function app: it registers one Blueprint per group. The bindings sit beside their handlers,
in `relay.http.routes.*` (HTTP) and `relay.triggers.worker` (queues and the timer)."""

import azure.functions as func

from relay.core import telemetry
from relay.core.settings import auth_mode
from relay.http.routes import controls, event_types, meta, operator, publishing, replays, smoke, subscriptions
from relay.triggers import worker

telemetry.configure()

# RELAY_AUTH=entra: callers are Entra ID principals (App Service Authentication in front, the
# relay checks their roles), so the host asks for no function key; keys mode keeps the key.
# Routes that are anonymous always (health, openapi.json, the console) say so themselves.
AUTH_LEVEL = func.AuthLevel.ANONYMOUS if auth_mode() == "entra" else func.AuthLevel.FUNCTION
app = func.FunctionApp(http_auth_level=AUTH_LEVEL)

for blueprint in (
    subscriptions.bp,
    publishing.bp,
    replays.bp,
    controls.bp,
    event_types.bp,
    meta.bp,
    operator.bp,
    smoke.bp,
    worker.queues,
    worker.timers,
):
    app.register_functions(blueprint)
