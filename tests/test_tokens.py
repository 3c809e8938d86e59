"""Signed tokens: continuation tokens and trigger states are sealed with the relay's key, so a
forged, edited or truncated one is a 400 naming its parameter, and instances on one storage
account share the key."""

from __future__ import annotations

import base64
import json
import threading
from urllib.parse import parse_qs, urlsplit

import pytest

from relay.core.errors import BadRequest, ConfigurationError
from relay.core.settings import Settings, reset_settings
from relay.store.storage import KEYS_TABLE, Endpoints, Storage
from relay.store.tokens import KEY_PARTITION, KEY_ROW, Purpose, TokenCodec, get_codec, reset_codec, stored_key
from tests.helpers import wait_until

KEY = b"k" * 32


def _flip(text: str, at: int) -> str:
    return text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1 :]


def test_a_token_opens_only_unchanged_with_its_key_and_purpose() -> None:
    codec = TokenCodec(KEY)
    token = codec.seal(Purpose.TRIGGER_STATE, {"k": "20260101T000000.000000Z", "s": "x"})
    assert codec.open(Purpose.TRIGGER_STATE, token, "triggerState") == {"k": "20260101T000000.000000Z", "s": "x"}
    payload, mac = token.split(".")
    edited_payload = (
        base64.urlsafe_b64encode(json.dumps({"k": "19700101T000000.000000Z"}).encode()).decode().rstrip("=")
    )
    bad = [_flip(token, i) for i in range(len(token)) if token[i] != "."] + [
        token[:-1],
        token[: len(payload)],
        payload,
        f"{edited_payload}.{mac}",
        "",
        ".",
        "nonsense",
        token + "x",
        TokenCodec(b"o" * 32).seal(Purpose.TRIGGER_STATE, {"k": "20260101T000000.000000Z"}),  # another key
        codec.seal(Purpose.DELIVERIES_PAGE, {"k": "20260101T000000.000000Z"}),  # another kind of token
        "é" + token,
    ]
    for text in bad:
        with pytest.raises(BadRequest) as caught:
            codec.open(Purpose.TRIGGER_STATE, text, "triggerState")
        assert [e.field for e in caught.value.errors] == ["triggerState"], text


def test_token_key_setting_is_optional_and_checked() -> None:
    assert Settings.from_environ({}).token_key is None
    assert Settings.from_environ({"RELAY_TOKEN_KEY": "s" * 32}).token_key == "s" * 32
    with pytest.raises(ConfigurationError, match="RELAY_TOKEN_KEY") as caught:
        Settings.from_environ({"RELAY_TOKEN_KEY": "short-secret"})
    assert "short-secret" not in str(caught.value)
    assert "s" * 32 not in repr(Settings.from_environ({"RELAY_TOKEN_KEY": "s" * 32}))


OLD_KEY = "the-key-in-use-before-the-rotation-0001"
NEW_KEY = "the-key-the-operator-rotated-to-0000002"


def _codec_from(monkeypatch: pytest.MonkeyPatch, **values: str) -> TokenCodec:
    """The process codec as the app builds it from its app settings (environment)."""
    for name in ("RELAY_TOKEN_KEY", "RELAY_TOKEN_KEY_PREVIOUS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    reset_settings()
    reset_codec()
    return get_codec()


def test_a_state_signed_with_the_previous_key_opens_after_rotation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rotating RELAY_TOKEN_KEY with the old key in RELAY_TOKEN_KEY_PREVIOUS keeps every trigger
    state and continuation token in flight working; new ones are signed with the new key only, and
    a forged or a third-key token is still refused. Without the previous key the old state fails."""
    try:
        before = _codec_from(monkeypatch, RELAY_TOKEN_KEY=OLD_KEY)
        state = before.seal(Purpose.TRIGGER_STATE, {"k": "20260101T000000.000000Z", "s": "x"})
        page = before.seal(Purpose.SUBSCRIPTIONS_PAGE, {"k": "sub-0001"})

        after = _codec_from(monkeypatch, RELAY_TOKEN_KEY=NEW_KEY, RELAY_TOKEN_KEY_PREVIOUS=OLD_KEY)
        assert after.open(Purpose.TRIGGER_STATE, state, "triggerState")["s"] == "x"
        assert after.open(Purpose.SUBSCRIPTIONS_PAGE, page, "continuationToken") == {"k": "sub-0001"}
        fresh = after.seal(Purpose.TRIGGER_STATE, {"s": "y"})
        assert TokenCodec(NEW_KEY.encode()).open(Purpose.TRIGGER_STATE, fresh, "triggerState") == {"s": "y"}
        with pytest.raises(BadRequest):  # signed with the new key, not the previous one
            TokenCodec(OLD_KEY.encode()).open(Purpose.TRIGGER_STATE, fresh, "triggerState")

        forged = [
            _flip(state, 2),
            _flip(state, len(state) - 2),
            TokenCodec(b"f" * 32).seal(Purpose.TRIGGER_STATE, {"s": "x"}),  # a key never configured
            before.seal(Purpose.DELIVERIES_PAGE, {"s": "x"}),  # the old key, another purpose
        ]
        for token in forged:
            with pytest.raises(BadRequest):
                after.open(Purpose.TRIGGER_STATE, token, "triggerState")

        rotated_out = _codec_from(monkeypatch, RELAY_TOKEN_KEY=NEW_KEY)
        with pytest.raises(BadRequest):
            rotated_out.open(Purpose.TRIGGER_STATE, state, "triggerState")
    finally:
        monkeypatch.undo()
        reset_settings()
        reset_codec()


def test_previous_token_key_setting_is_checked_and_never_shown() -> None:
    assert Settings.from_environ({}).token_key_previous is None
    with pytest.raises(ConfigurationError, match="RELAY_TOKEN_KEY_PREVIOUS") as caught:
        Settings.from_environ({"RELAY_TOKEN_KEY_PREVIOUS": "short-secret"})
    assert "short-secret" not in str(caught.value)
    assert OLD_KEY not in repr(Settings.from_environ({"RELAY_TOKEN_KEY_PREVIOUS": OLD_KEY}))
    assert OLD_KEY not in repr(TokenCodec(NEW_KEY.encode(), [OLD_KEY.encode()]))


def test_instances_starting_together_agree_on_one_stored_key(azurite) -> None:
    """Eight first uses race to create the key: one insert wins, every one reads the same key."""
    storage = Storage(Endpoints(connection_string=azurite.connection_string))
    storage.ensure()
    storage.table(KEYS_TABLE).delete_entity(KEY_PARTITION, KEY_ROW)
    keys: list[bytes] = []
    start = threading.Barrier(8)

    def first_use() -> None:
        start.wait()
        keys.append(stored_key(Storage(Endpoints(connection_string=azurite.connection_string))))

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(keys) == 8 and len(set(keys)) == 1 and len(keys[0]) == 32
    assert list(storage.table(KEYS_TABLE).list_entities()) == [
        {"PartitionKey": KEY_PARTITION, "RowKey": KEY_ROW, "key": base64.b64encode(keys[0]).decode()}
    ]


def _token(url: str, name: str) -> str:
    return parse_qs(urlsplit(url).query)[name][0]


def _field(response) -> list[str]:
    assert response.status_code == 400, response.text
    assert response.headers["Content-Type"].startswith("application/problem+json")
    return [e["field"] for e in response.json()["errors"]]


def _refused(response, name: str, bad: str) -> bool:
    """A paging token the relay cannot verify is a 400 naming it; a trigger state starts a fresh
    chain instead (CONTRACT section 6: 202 with a new state, never a 400)."""
    if name != "triggerState":
        return _field(response) == [name]
    fresh = parse_qs(urlsplit(response.headers["Location"]).query)["triggerState"][0]
    return response.status_code == 202 and fresh != bad and "Retry-After" in response.headers


def test_tokens_work_across_instances_and_refuse_tampering(relay_factory, receiver_factory, unique_type) -> None:
    """Two dev hosts on one Azurite share the stored key: each takes the other's tokens of every
    kind. An edited, truncated or foreign-key token is a 400 naming its parameter."""
    first, second = relay_factory(), relay_factory()
    receiver = receiver_factory()
    subs = [first.subscribe(f"{receiver.url}?n={n}", eventTypes=[unique_type]) for n in range(2)]
    for n in range(2):
        first.publish({"type": unique_type, "data": n})
    receiver.wait_for(4)
    wait_until(first.queue_idle, 30, "deliveries to be logged")

    listing = first.get(f"subscriptions?eventType={unique_type}&limit=1").json()
    deliveries = first.get(f"subscriptions/{subs[0]['id']}/deliveries?limit=1").json()
    poll = first.get(f"events/poll?eventType={unique_type}")
    links = {
        "continuationToken": [listing["nextLink"], deliveries["nextLink"]],
        "triggerState": [poll.headers["Location"]],
    }

    def on(relay, url: str, name: str, value: str):
        path = urlsplit(url).path.removeprefix("/api/")
        query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        return relay.session.get(f"{relay.base}/{path}", params={**query, name: value}, timeout=30)

    for name, urls in links.items():
        for url in urls:
            token = _token(url, name)
            assert on(second, url, name, token).status_code in (200, 202)  # the shared key
            payload, mac = token.split(".")
            for bad in (
                _flip(token, 3),
                _flip(token, len(token) - 2),
                token[:-4],
                payload,
                f"{payload}.",
                # a readable token of the right shape, signed with another key
                TokenCodec(b"x" * 32).seal(
                    Purpose.TRIGGER_STATE if name == "triggerState" else Purpose.SUBSCRIPTIONS_PAGE,
                    {"k": "20200101T000000.000000Z"},
                ),
            ):
                assert _refused(on(second, url, name, bad), name, bad)

    # An instance with a key of its own takes none of them.
    other = relay_factory({"RELAY_TOKEN_KEY": "an-operator-chosen-key-of-enough-length"})
    for name, urls in links.items():
        for url in urls:
            assert _refused(on(other, url, name, _token(url, name)), name, _token(url, name))
