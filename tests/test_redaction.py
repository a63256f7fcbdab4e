"""No secret survives the Redactor, in any encoding, split or cut anywhere."""

from __future__ import annotations

import io
import json
import logging
import re
import string
from urllib.parse import quote, quote_plus

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproxy.redaction import (
    MIN_CUT_PREFIX,
    REDACTED,
    RedactingFilter,
    Redactor,
    install_log_redaction,
)

KEY = "sk-proj-Zq81mN2vX7cR4tY6uI9oP0aS3dF5gH"
CLIENT_KEY = "client/key+with spaces&=chars"

# Realistic keys: the characters API keys and client keys are made of.
key_alphabet = string.ascii_letters + string.digits + "-_./+= "
secrets = st.text(alphabet=key_alphabet, min_size=8, max_size=40)
# Surrounding text drawn from characters no key uses, so a key cannot appear in it by chance.
filler = st.text(alphabet="!#$(),;:<>?@[]^`{|}~é\n\"'", max_size=60)


def json_escaped(secret: str, mask: list[bool], *, upper: bool = False) -> str:
    """``secret`` with the characters chosen by ``mask`` written as JSON escapes."""
    out = []
    for character, escape in zip(secret, mask + [False] * len(secret), strict=False):
        if not escape:
            out.append(character)
        elif character == "/":
            out.append("\\/")
        else:
            out.append(f"\\u{ord(character):04X}" if upper else f"\\u{ord(character):04x}")
    return "".join(out)


def encodings(secret: str, mask: list[bool]) -> list[str]:
    return [
        secret,
        json_escaped(secret, mask),
        json_escaped(secret, mask, upper=True),
        orjson.dumps(secret).decode()[1:-1],
        orjson.dumps(json_escaped(secret, mask)).decode()[1:-1],
        quote(secret, safe=""),
        quote_plus(secret, safe=""),
        re.sub("%[0-9A-F]{2}", lambda match: match[0].lower(), quote(secret, safe="")),
    ]


@given(secret=secrets, before=filler, after=filler, mask=st.lists(st.booleans(), max_size=40))
@settings(max_examples=300)
def test_a_secret_in_any_encoding_never_survives(
    secret: str, before: str, after: str, mask: list[bool]
) -> None:
    redactor = Redactor({secret})
    for form in encodings(secret, mask):
        text = before + form + after
        redacted = redactor.redact_text(text)
        assert secret not in redacted
        assert form not in redacted
        assert redacted == before + REDACTED + after
        assert not redactor.contains_secret(redacted)
        assert redactor.redact_bytes(text.encode()) == redacted.encode()


@given(secret=secrets, before=filler, after=filler, mask=st.lists(st.booleans(), max_size=40))
@settings(max_examples=100)
def test_a_secret_split_at_every_position_never_survives_the_stream(
    secret: str, before: str, after: str, mask: list[bool]
) -> None:
    redactor = Redactor({secret})
    for form in (secret, json_escaped(secret, mask), quote_plus(secret, safe="")):
        data = (before + form + after).encode()
        whole = redactor.redact_bytes(data)
        for split in range(len(data) + 1):
            stream = redactor.stream()
            output = stream.feed(data[:split]) + stream.feed(data[split:]) + stream.flush()
            assert output == whole
            assert secret.encode() not in output


@given(secret=secrets, before=filler, step=st.integers(1, 7))
@settings(max_examples=100)
def test_a_secret_fed_in_small_pieces_never_survives(secret: str, before: str, step: int) -> None:
    redactor = Redactor({secret})
    data = (before + secret + before + json_escaped(secret, [True] * 40)).encode()
    stream = redactor.stream()
    output = b"".join(stream.feed(data[i : i + step]) for i in range(0, len(data), step))
    output += stream.flush()
    assert output == redactor.redact_bytes(data)
    assert secret.encode() not in output
    assert len(stream.feed(b"x" * 1000)) >= 1000 - stream.holdback


@given(secret=secrets, before=filler, mask=st.lists(st.booleans(), max_size=40))
@settings(max_examples=200)
def test_a_secret_cut_at_every_size_leaves_no_prefix(
    secret: str, before: str, mask: list[bool]
) -> None:
    redactor = Redactor({secret})
    head = secret[:MIN_CUT_PREFIX]
    forms = [
        (secret, head),
        (json_escaped(secret, mask), json_escaped(head, mask)),
        (quote(secret, safe=""), quote(head, safe="")),
    ]
    for form, head_form in forms:
        text = before + form
        for size in range(len(before), len(text) + 1):
            cut = redactor.redact_text(text[:size], is_cut=True)
            kept = cut.removesuffix(REDACTED)
            assert kept.startswith(before[: len(kept)])
            # What is left of the secret is less than its first MIN_CUT_PREFIX characters.
            leaked = kept[len(before) :]
            assert len(leaked) < len(head_form), (form, size, cut)
            assert redactor.redact_bytes(text[:size].encode(), is_cut=True) == cut.encode()


@given(text=st.text(), secret=secrets)
def test_text_without_secrets_is_unchanged(text: str, secret: str) -> None:
    redactor = Redactor({secret})
    if redactor.contains_secret(text):
        return
    assert redactor.redact_text(text) == text
    stream = redactor.stream()
    assert stream.feed(text.encode()) + stream.flush() == text.encode()


def test_no_secrets_means_no_change() -> None:
    redactor = Redactor({"", "short"})
    assert not redactor
    assert redactor.ignored == {"short"}
    assert redactor.redact_text("short and sk-anything", is_cut=True) == "short and sk-anything"
    assert redactor.stream().feed(b"abc") == b"abc"


def test_the_probes_that_leaked() -> None:
    redactor = Redactor({KEY, CLIENT_KEY})
    in_band = f'data: {{"error": {{"message": "Incorrect API key provided: {KEY}"}}}}'
    assert KEY not in redactor.redact_text(in_band)
    assert (
        redactor.redact_text(f"authorization: Bearer {KEY}") == f"authorization: Bearer {REDACTED}"
    )
    escaped = orjson.dumps({"error": {"key": KEY}}).decode().replace("s", "\\u0073", 1)
    assert "\\u0073k-" in escaped or "sk-" in escaped
    body = '{"error": {"message": "bad key \\u0073k-proj-Zq81mN2vX7cR4tY6uI9oP0aS3dF5gH"}}'
    assert redactor.redact_text(body) == '{"error": {"message": "bad key <redacted>"}}'
    cut = ("x" * 65530 + KEY)[:65536]
    assert redactor.redact_text(cut, is_cut=True) == "x" * 65530 + REDACTED
    assert redactor.redact_text(f"?key={quote_plus(CLIENT_KEY)}") == f"?key={REDACTED}"
    assert redactor.redact_json({KEY: [KEY, 1, None]}) == {REDACTED: [REDACTED, 1, None]}


def test_non_ascii_secrets_in_json_and_url_forms() -> None:
    secret = "ключ-secret-😀-value"
    redactor = Redactor({secret})
    for form in (secret, json.dumps(secret)[1:-1], quote(secret), quote_plus(secret)):
        assert redactor.redact_text(f"<{form}>") == f"<{REDACTED}>", form
        assert redactor.redact_bytes(f"<{form}>".encode()) == f"<{REDACTED}>".encode(), form


def test_the_marker_names_nothing_of_the_secret() -> None:
    first = Redactor({KEY}).redact_text(KEY)
    second = Redactor({"another-secret-value"}).redact_text("another-secret-value")
    assert first == second == REDACTED


def test_a_longer_secret_containing_a_shorter_one_is_replaced_whole() -> None:
    redactor = Redactor({"abcdefgh", "abcdefgh-and-more"})
    assert redactor.redact_text("[abcdefgh-and-more]") == f"[{REDACTED}]"


def test_two_secrets_that_overlap_in_the_text_are_replaced_together() -> None:
    redactor = Redactor({"abcdefgh", "efghijklmnop"})
    assert redactor.redact_text("[abcdefghijklmnop]") == f"[{REDACTED}]"


def test_the_log_filter_redacts_message_arguments_and_exceptions() -> None:
    redactor = Redactor({KEY})
    stream = io.StringIO()
    logger = logging.getLogger("streamproxy.test_redaction")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    logger.addFilter(RedactingFilter(redactor))
    try:
        logger.warning("upstream said %s", f"bad key {KEY}")
        logger.warning(f"literal {KEY}")
        try:
            raise ValueError(f"echo {json_escaped(KEY, [True] * 5)}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    assert KEY not in output
    assert "\\u0073" not in output
    assert output.count(REDACTED) == 3
    assert "ValueError: echo <redacted>" in output


def test_install_covers_records_propagated_from_child_loggers() -> None:
    redactor = Redactor({KEY})
    stream = io.StringIO()
    parent = logging.getLogger("streamproxy_test_parent")
    handler = logging.StreamHandler(stream)
    parent.addHandler(handler)
    try:
        redacting = install_log_redaction(redactor, ["streamproxy_test_parent"])
        logging.getLogger("streamproxy_test_parent.child").error("key %s", KEY)
        assert stream.getvalue() == f"key {REDACTED}\n"
    finally:
        parent.removeHandler(handler)
        parent.removeFilter(redacting)
        logging.getLogger().removeFilter(redacting)
        for root_handler in logging.getLogger().handlers:
            root_handler.removeFilter(redacting)


def test_the_log_filter_keeps_arguments_for_formatters_that_unpack_them() -> None:
    """uvicorn's access formatter unpacks ``record.args``: they must stay a tuple."""
    redactor = Redactor({KEY})
    record = logging.makeLogRecord(
        {"msg": '%s - "%s %s HTTP/%s" %d', "args": ("1.2.3.4", "GET", f"/x?key={KEY}", "1.1", 200)}
    )
    assert RedactingFilter(redactor).filter(record)
    assert isinstance(record.args, tuple)
    assert record.args == ("1.2.3.4", "GET", f"/x?key={REDACTED}", "1.1", 200)
    assert KEY not in record.getMessage()


def test_the_log_filter_catches_a_secret_split_across_arguments() -> None:
    redactor = Redactor({KEY})
    record = logging.makeLogRecord({"msg": "%s%s", "args": (KEY[:10], KEY[10:])})
    RedactingFilter(redactor).filter(record)
    assert record.getMessage() == REDACTED


def test_the_log_filter_leaves_clean_records_alone() -> None:
    record = logging.makeLogRecord({"msg": "hello %s %d", "args": ("world", 3)})
    RedactingFilter(Redactor({KEY})).filter(record)
    assert record.msg == "hello %s %d"
    assert record.args == ("world", 3)


def test_the_stream_releases_a_whole_sse_event_at_once() -> None:
    stream = Redactor({KEY}).stream()
    event = b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'
    assert stream.feed(event) == event  # nothing held back: no added latency
    assert stream.feed(b'data: {"x": "' + KEY[:5].encode()) == b""  # could begin the key
    assert stream.feed(KEY[5:].encode() + b'"}\n\n') == b'data: {"x": "<redacted>"}\n\n'
    assert stream.flush() == b""


def test_a_secret_with_a_line_feed_is_still_held_across_lines() -> None:
    secret = "line-one\nline-two"
    stream = Redactor({secret}).stream()
    output = stream.feed(b"[line-one\n") + stream.feed(b"line-two]") + stream.flush()
    assert output == f"[{REDACTED}]".encode()
