"""``streamproxy inspect``: the timeline model, its HTML page and the command.

Two cassettes are built here: a 20-chunk answer, and a stream with a ~1 MB tool call in
thousands of fragments, a 3 s stall inside it, and a second call whose start seals the first.
Both pages are rendered to PNG in headless Chromium when it is installed.
"""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

from streamproxy.cassette.format import (
    Cassette,
    Chunk,
    Interaction,
    RecordedRequest,
    RecordedResponse,
    dump,
)
from streamproxy.cassette.timeline import (
    DEFAULT_BIN_COUNT,
    Stall,
    build_timeline,
    interaction_timeline,
)
from streamproxy.cassette.timeline_html import render_html
from streamproxy.cli import main

WORDS = [f"word{i} " for i in range(17)] + ["<b>bold</b>"]
BIG_CONTENT = "x" * 1_000_000
BIG_ARGUMENTS = orjson.dumps({"path": "big.txt", "content": BIG_CONTENT}).decode()
FRAGMENT = 200
STALL_AT = 2_000  # the fragment after which the upstream goes silent
STALL_MS = 3_000.0
SMALL_ARGUMENTS = '{"path": "small.txt"}'


def _data(delta: dict[str, object], finish: str | None = None) -> bytes:
    chunk = {
        "id": "timeline",
        "object": "chat.completion.chunk",
        "created": 1780000000,
        "model": "deepseek-v4-flash",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def _head(index: int, call_id: str, name: str) -> bytes:
    call = {"index": index, "id": call_id, "type": "function"}
    return _data({"tool_calls": [{**call, "function": {"name": name, "arguments": ""}}]})


def _fragment(index: int, text: str) -> bytes:
    return _data({"tool_calls": [{"index": index, "function": {"arguments": text}}]})


def _interaction(chunks: list[Chunk]) -> Interaction:
    request = RecordedRequest(
        method="POST",
        path="/chat/completions",
        body={"model": "deepseek-v4-flash", "messages": [{"role": "user", "content": "hi"}]},
    )
    response = RecordedResponse(headers={"content-type": "text/event-stream"}, chunks=chunks)
    return Interaction(request=request, response=response)


def answer_cassette() -> Cassette:
    """20 chunks: the role, 18 words 20 ms apart, then the finish with [DONE]."""
    chunks = [Chunk(150.0, _data({"role": "assistant", "content": ""}))]
    chunks += [Chunk(200.0 + 20.0 * i, _data({"content": word})) for i, word in enumerate(WORDS)]
    chunks.append(Chunk(600.0, _data({}, "stop") + b"data: [DONE]\n\n"))
    return Cassette(interactions=[_interaction(chunks)], source="tests: a 20-chunk answer")


def big_call_chunks() -> tuple[list[Chunk], dict[str, float]]:
    """The big call's chunks and the times that matter (second call's head, finish, stall)."""
    times: dict[str, float] = {}
    chunks = [Chunk(300.0, _data({"role": "assistant", "content": ""}))]
    chunks.append(Chunk(310.0, _head(0, "call_big", "write_file")))
    t = 310.0
    pieces = [BIG_ARGUMENTS[i : i + FRAGMENT] for i in range(0, len(BIG_ARGUMENTS), FRAGMENT)]
    for number, piece in enumerate(pieces):
        t += STALL_MS if number == STALL_AT else 1.0
        if number == STALL_AT:
            times["stall_end"] = t
        chunks.append(Chunk(t, _fragment(0, piece)))
        if number == 0:
            times["first_fragment"] = t
        if number == STALL_AT - 1:
            times["stall_start"] = t
            chunks.append(Chunk(t, b": keep-alive\n\n"))  # a comment does not end the stall
    t += 5.0
    times["second_head"] = t
    chunks.append(Chunk(t, _head(1, "call_small", "write_file")))
    for piece in (SMALL_ARGUMENTS[:9], SMALL_ARGUMENTS[9:]):
        t += 5.0
        chunks.append(Chunk(t, _fragment(1, piece)))
    t += 5.0
    times["finish"] = t
    chunks.append(Chunk(t, _data({}, "tool_calls") + b"data: [DONE]\n\n"))
    return chunks, times


def big_cassette() -> tuple[Cassette, dict[str, float]]:
    chunks, times = big_call_chunks()
    cassette = Cassette(interactions=[_interaction(chunks)], source="tests: a 1 MB tool call")
    return cassette, times


# --------------------------------------------------------------------------- the model


def test_an_answer_gives_one_fragment_per_word_and_no_stall() -> None:
    [item] = build_timeline(answer_cassette()).interactions
    assert (item.chunk_count, item.axis, item.span) == (20, "ms", 600.0)
    assert (item.first_byte, item.first_token) == (150.0, 200.0)
    assert (item.finish_reason, item.finished_at, item.is_clean) == ("stop", 600.0, True)
    [content] = item.tracks
    assert content.kind == "content"
    assert content.fragments == len(WORDS) and content.size == len("".join(WORDS))
    assert content.sample == "".join(WORDS)
    # 20 ms apart on a 2.5 ms grid: every word has its own bin
    assert [(bin.fragments, bin.size) for bin in content.bins] == [(1, len(w)) for w in WORDS]
    assert (content.first, content.last) == (200.0, 200.0 + 20.0 * (len(WORDS) - 1))
    assert item.calls == () and item.stalls == ()
    assert "hi" not in item.label and "1 message" in item.label


def test_a_megabyte_call_is_binned_sealed_when_the_next_starts_and_its_stall_found() -> None:
    cassette, times = big_cassette()
    [item] = build_timeline(cassette, stall_ms=1000.0).interactions
    big, small = item.calls
    assert (big.name, big.outcome, big.size) == ("write_file", "ready", len(BIG_ARGUMENTS))
    assert big.fragments == -(-len(BIG_ARGUMENTS) // FRAGMENT)
    assert big.started == times["first_fragment"]  # announced with its first fragment
    assert big.sealed == times["second_head"]  # the next call's start is its boundary
    assert (small.outcome, small.sealed, small.size) == ("ready", times["finish"], 21)
    track = next(track for track in item.tracks if track.call_id == "call_big")
    assert len(track.bins) <= DEFAULT_BIN_COUNT
    assert sum(bin.size for bin in track.bins) == len(BIG_ARGUMENTS)
    assert sum(bin.fragments for bin in track.bins) == big.fragments
    assert track.sample.startswith('{"path":"big.txt"') and track.sample.endswith('x"}')
    assert len(track.sample) < 3000
    assert item.stalls == (Stall(times["stall_start"], times["stall_end"]),)
    assert item.stalls[0].duration == STALL_MS
    assert item.chunk_count == len(cassette.interactions[0].response.chunks)


def test_a_stream_cut_mid_arguments_refuses_the_call() -> None:
    chunks = [Chunk(10.0, _head(0, "call_cut", "write_file")), Chunk(20.0, _fragment(0, '{"a'))]
    item = interaction_timeline(_interaction(chunks))
    [call] = item.calls
    assert (call.outcome, call.invalid_kind, call.sealed) == ("invalid", "truncated", 20.0)
    assert not item.is_clean and item.finish_reason is None


def test_a_body_without_timing_is_drawn_by_chunk_number() -> None:
    chunks = [Chunk(0.0, _data({"content": word})) for word in WORDS[:3]]
    item = interaction_timeline(_interaction(chunks), stall_ms=1.0)
    assert (item.axis, item.span) == ("chunk", 2.0)
    assert item.stalls == ()
    assert [track.bins[0].start for track in item.tracks] == [0.0]


def test_a_response_that_is_not_a_stream_has_no_tracks() -> None:
    response = RecordedResponse(
        status=429,
        headers={"content-type": "application/json"},
        chunks=[Chunk(40.0, b'{"error": {"message": "slow down"}}')],
    )
    item = interaction_timeline(Interaction(request=None, response=response))
    assert (item.status, item.is_event_stream, item.tracks, item.calls) == (429, False, (), ())
    assert item.label == "(any request)"


# --------------------------------------------------------------------------- the page


def _seals(page: str, outcome: str) -> list[str]:
    return re.findall(rf'<g class="seal {outcome}" data-call-id="([^"]+)"', page)


def test_the_answer_page_has_its_parts_and_escapes_the_text() -> None:
    page = render_html(build_timeline(answer_cassette()), title="answer <1>")
    assert page.count("<svg") == 1
    assert len(re.findall(r'<rect class="bin content"', page)) == len(WORDS)
    assert _seals(page, "ready") == [] and 'class="stall"' not in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "<b>" not in page
    assert "<title>answer &lt;1&gt; · streamproxy inspect</title>" in page
    assert "<script" not in page and not re.search(r"(src|href)=|url\(|@import", page)


def test_the_megabyte_page_stays_small_with_a_seal_per_call_and_the_stall() -> None:
    cassette, _ = big_cassette()
    page = render_html(build_timeline(cassette), title="big")
    assert len(page.encode()) < 300_000
    assert _seals(page, "ready") == ["call_big", "call_small"]
    assert page.count('<rect class="stall"') == 1 and "stall 3.00 s" in page
    assert len(re.findall(r'<rect class="bin arguments"', page)) <= 2 * DEFAULT_BIN_COUNT


def test_a_refused_call_gets_a_cross() -> None:
    chunks = [Chunk(10.0, _head(0, "call_cut", "write_file")), Chunk(20.0, _fragment(0, '{"a'))]
    page = render_html(build_timeline(Cassette(interactions=[_interaction(chunks)])), title="cut")
    assert _seals(page, "invalid") == ["call_cut"] and "truncated" in page


# --------------------------------------------------------------------------- the command


def test_the_command_prints_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cassette, times = big_cassette()
    path = tmp_path / "big.cassette.json"
    dump(cassette, path)
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "source: tests: a 1 MB tool call" in out
    # the core announces a call with its first fragment (a name may grow until then)
    started, sealed = times["first_fragment"], times["second_head"]
    assert f"first byte 300.0 ms, first token {started:.1f} ms; finish tool_calls" in out
    assert f"call write_file call_big: started {started:.1f} ms, sealed at {sealed:.1f} ms" in out
    assert f"stall: {STALL_MS:.1f} ms of silence, {times['stall_start']:.1f} ms" in out


def test_the_command_writes_a_page(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "answer.cassette.json"
    dump(answer_cassette(), path)
    output = tmp_path / "answer.html"
    assert main(["inspect", str(path), "-o", str(output)]) == 0
    assert output.read_text().startswith("<!doctype html>")
    assert f"wrote {output}" in capsys.readouterr().out


def test_the_command_refuses_a_bad_cassette(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.cassette.json"
    path.write_text("{not json")
    assert main(["inspect", str(path)]) == 2
    assert "streamproxy inspect:" in capsys.readouterr().err


# --------------------------------------------------------------------------- the pictures


def test_both_pages_render_in_chromium(tmp_path: Path) -> None:
    from tests.e2e.browser import screenshot_file

    cassette, _ = big_cassette()
    for name, source in (("answer", answer_cassette()), ("big-call", cassette)):
        html = tmp_path / f"{name}.html"
        html.write_text(render_html(build_timeline(source), title=name), encoding="utf-8")
        png = tmp_path / f"{name}.png"
        screenshot_file(html, png)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
