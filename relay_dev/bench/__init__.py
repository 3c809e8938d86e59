"""The relay's benchmark: `python -m relay_dev.bench` (see the README, "Benchmark").

It runs its own Azurite, a counting reverse proxy in front of Azurite's three services, the relay
(`python -m relay dev`, pointed at the proxy) and a loopback webhook receiver, then measures
throughput against a plain HTTP sender, publish-to-receipt latency, storage transactions and
function executions per delivery, and one event fanned out to many subscribers.

Modules: `proxy` (the counting proxy, run as its own process), `receiver` (the asyncio webhook
receiver), `rawsend` (the plain `requests` sender, run as its own process), `runner` (the
scenarios, the table and the JSON).
"""
