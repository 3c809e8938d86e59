"""The HTTP routes, one module and one `func.Blueprint` (`bp`) per route group; `function_app.py`
registers them. Each route is bound with `relay.http.api.http`, which dispatches by method and maps
every error to a problem answer in one place (`relay.http.api.route`)."""
