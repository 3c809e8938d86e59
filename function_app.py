"""The function app: bindings only. Everything they do lives in `relay/`."""

import azure.functions as func

from relay import api, console, telemetry, worker
from relay.settings import auth_mode

telemetry.configure()

# RELAY_AUTH=entra: callers are Entra ID principals (App Service Authentication in front, the
# relay checks their roles), so the host asks for no function key; keys mode keeps the key.
AUTH_LEVEL = func.AuthLevel.ANONYMOUS if auth_mode() == "entra" else func.AuthLevel.FUNCTION
app = func.FunctionApp(http_auth_level=AUTH_LEVEL)

# Every method reaches each route, so a wrong one is answered 405 by the relay, not 404 by the host.
ALL = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
STORAGE = "AzureWebJobsStorage"


@app.route(route="subscriptions", methods=ALL)
def subscriptions(req: func.HttpRequest) -> func.HttpResponse:
    return api.subscriptions(req)


@app.route(route="subscriptions/{id}", methods=ALL)
def subscription(req: func.HttpRequest) -> func.HttpResponse:
    return api.subscription(req)


@app.route(route="subscriptions/{id}/deliveries", methods=ALL)
def deliveries(req: func.HttpRequest) -> func.HttpResponse:
    return api.deliveries(req)


@app.route(route="subscriptions/{id}/secret", methods=ALL)
def secret(req: func.HttpRequest) -> func.HttpResponse:
    return api.secret_route(req)


@app.route(route="unsubscribe", methods=ALL)
def unsubscribe(req: func.HttpRequest) -> func.HttpResponse:
    return api.unsubscribe_route(req)


@app.route(route="events", methods=ALL)
def events(req: func.HttpRequest) -> func.HttpResponse:
    return api.events(req)


@app.route(route="health", methods=ALL, auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    return api.health_route(req)


@app.queue_trigger(arg_name="msg", queue_name="relay-fanout", connection=STORAGE)
def fanout(msg: func.QueueMessage) -> None:
    worker.on_fanout(msg)


@app.queue_trigger(arg_name="msg", queue_name="relay-deliveries", connection=STORAGE)
def deliver(msg: func.QueueMessage) -> None:
    worker.on_delivery(msg)


@app.route(route="events/poll", methods=ALL)
def poll(req: func.HttpRequest) -> func.HttpResponse:
    return api.poll_route(req)


@app.route(route="subscriptions/{id}/replay", methods=ALL)
def replay(req: func.HttpRequest) -> func.HttpResponse:
    return api.replay_route(req)


@app.route(route="operations/{operationId}", methods=ALL)
def operation(req: func.HttpRequest) -> func.HttpResponse:
    return api.operation_route(req)


@app.route(route="event-types", methods=ALL)
def event_types(req: func.HttpRequest) -> func.HttpResponse:
    return api.event_types(req)


@app.route(route="event-types/{name}", methods=ALL)
def event_type(req: func.HttpRequest) -> func.HttpResponse:
    return api.event_type(req)


@app.route(route="event-types/{name}/schema", methods=ALL)
def event_data_schema(req: func.HttpRequest) -> func.HttpResponse:
    return api.event_data_schema_route(req)


@app.route(route="events/batch", methods=ALL)
def events_batch(req: func.HttpRequest) -> func.HttpResponse:
    return api.events_batch(req)


@app.route(route="openapi.json", methods=ALL, auth_level=func.AuthLevel.ANONYMOUS)
def openapi(req: func.HttpRequest) -> func.HttpResponse:
    return api.openapi_route(req)


@app.queue_trigger(arg_name="msg", queue_name="relay-replays", connection=STORAGE)
def replayer(msg: func.QueueMessage) -> None:
    worker.on_replay(msg)


@app.timer_trigger(arg_name="timer", schedule="0 5 * * * *", run_on_startup=False)
def retention(timer: func.TimerRequest) -> None:
    worker.on_sweep(timer)


# ---- operator tools: the console (anonymous page; it calls the API with the operator's key) ----

@app.route(route="console", methods=ALL, auth_level=func.AuthLevel.ANONYMOUS)
def console_page(req: func.HttpRequest) -> func.HttpResponse:
    return console.serve(req)


@app.route(route="console/{file}", methods=ALL, auth_level=func.AuthLevel.ANONYMOUS)
def console_file(req: func.HttpRequest) -> func.HttpResponse:
    return console.serve(req)


@app.route(route="stats", methods=ALL)
def stats(req: func.HttpRequest) -> func.HttpResponse:
    return api.stats_route(req)


@app.route(route="subscriptions/{id}/activate", methods=ALL)
def activate(req: func.HttpRequest) -> func.HttpResponse:
    return api.activate_route(req)
