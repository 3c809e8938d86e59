"""Reading queue messages: a message the relay cannot parse goes to the poison queue at once,
with its reason logged, instead of failing round and round until the host gives up on it."""

from __future__ import annotations

import logging
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from relay.pipeline.outbox import Outbox
from relay.store.storage import POISON_SUFFIX, Storage

log = logging.getLogger("relay.queues")
M = TypeVar("M", bound=BaseModel)


def parse_or_poison(storage: Storage, queue: str, model: type[M], body: bytes | str) -> M | None:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        reason = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'message'}: {e['msg']}" for e in exc.errors()[:5])
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        Outbox(storage).poison(queue, text)
        log.error("unreadable message on %s moved to %s%s: %s", queue, queue, POISON_SUFFIX, reason)
        return None
