"""Replacing and restoring: anonymise → deanonymise is the identity, for whole texts and for
streams split anywhere; replacements are deterministic under a key and differ across keys."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from proxygate.features.detectors import NAMES, Allow, ScanOptions, scan
from proxygate.features.redaction import FindingsCache, Redaction, Replacer
from proxygate.features.restoration import Restorer, StreamRestorer
from proxygate.wire.ir import Format
from proxygate.wire.sse import SSEParser
from tests.corpus.guardrails import all_cases

KEY = bytes(range(32))
SECRETS = sorted({c.text[s:e] for c in all_cases() if c.is_positive for s, e in c.values})
CONTEXTS = [c.text for c in all_cases() if c.is_positive]


def redaction(key: bytes = KEY, allow: Allow | None = None) -> Redaction:
    return Redaction(Replacer(key), NAMES, ScanOptions(), allow or Allow())


texts = st.lists(
    st.one_of(st.text(max_size=30), st.sampled_from(CONTEXTS), st.sampled_from(SECRETS)), max_size=8
).map("".join)


@settings(max_examples=200, deadline=None)
@given(texts)
def test_anonymise_then_restore_is_identity(text: str) -> None:
    r = redaction()
    out = r.text(text)
    assert Restorer(r.reverse).text(out) == text if r.reverse else out == text


@settings(max_examples=80, deadline=None)
@given(texts, st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=40))
def test_a_stream_split_anywhere_restores_exactly(text: str, cuts: list[int]) -> None:
    r = redaction()
    sent = r.text(text)
    if not r.reverse:
        return
    pieces, at, i = [], 0, 0
    while at < len(sent):
        n = cuts[i % len(cuts)]
        pieces.append(sent[at : at + n])
        at, i = at + n, i + 1
    events = [
        b"event: content_block_delta\ndata: "
        + orjson.dumps(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}
        )
        + b"\n\n"
        for p in pieces
    ]
    events.append(b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n')
    transform = StreamRestorer(Restorer(r.reverse), Format.anthropic)
    raw = b"".join(events)
    out = b"".join(transform.feed(raw[j : j + 5]) for j in range(0, len(raw), 5)) + transform.close()
    parser = SSEParser()
    got = "".join(
        orjson.loads(e.data)["delta"]["text"] for e in parser.feed(out) if e.event == "content_block_delta"
    )
    assert got == text


def test_deterministic_under_a_key_different_under_another() -> None:
    text = "mail jane.roe@corp.io key ghp_aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6 from 8.8.8.8"
    assert redaction().text(text) == redaction().text(text)
    assert redaction().text(text) != redaction(bytes(32)).text(text)
    out = redaction().text(text)
    for value in ("jane.roe@corp.io", "ghp_aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6", "8.8.8.8"):
        assert value not in out
    # Realistic fakes keep their kind: the fake address is an address, the fake IP an IP.
    kinds = sorted(f.detector for f in scan(out, ["email", "ip_address"]))
    assert kinds == ["email", "ip_address"]


def test_allow_list_literals_and_regexes() -> None:
    allow = Allow.parse(["ci@corp.io", r"re:.*@example\.org"])
    text = "a ci@corp.io b ops@example.org c dev@corp.io"
    out = redaction(allow=allow).text(text)
    assert "ci@corp.io" in out and "ops@example.org" in out and "dev@corp.io" not in out


def test_tool_arguments_keep_their_layout_and_stay_json() -> None:
    r = redaction()
    args = '{"cmd":  "export PGPASSWORD=s3cr3t!x",\n "n": 1}'
    out = r.value({"arguments": args})["arguments"]
    assert (
        "s3cr3t!x" not in out
        and out.startswith('{"cmd":  "export PGPASSWORD=')
        and out.endswith('",\n "n": 1}')
    )
    assert Restorer(r.reverse).text(out, is_json=True) == args


def test_signatures_thinking_and_images_pass_untouched() -> None:
    body = {
        "messages": [
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "mail jane.roe@corp.io", "signature": "x"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "jane.roe@corp.io"},
                    },
                    {"type": "text", "text": "mail jane.roe@corp.io"},
                ],
            }
        ]
    }
    out = redaction().value(body)
    blocks = out["messages"][0]["content"]
    assert blocks[0] == body["messages"][0]["content"][0]
    assert blocks[1] == body["messages"][0]["content"][1]
    assert "jane.roe@corp.io" not in blocks[2]["text"]


def test_a_fake_never_stands_for_two_originals() -> None:
    r = redaction()
    values = [f"user{i}@corp.io" for i in range(400)]
    out = r.text(" ".join(values))
    assert len(set(r.reverse)) == 400
    assert Restorer(r.reverse).text(out) == " ".join(values)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(CONTEXTS), texts), min_size=2, max_size=8))
def test_one_pass_over_the_whole_body_finds_what_text_by_text_finds(parts: list[str]) -> None:
    body = {"messages": [{"role": "user", "content": part} for part in parts]}
    alone = redaction().value(body)
    together = Redaction(Replacer(KEY), NAMES, ScanOptions(), Allow(), FindingsCache()).body(body)
    assert together == alone


def test_a_key_block_begun_in_one_text_never_hides_a_key_in_the_next() -> None:
    key_block = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0t\n-----END RSA PRIVATE KEY-----"
    body = {
        "system": "look for -----BEGIN RSA PRIVATE KEY----- lines",
        "messages": [{"role": "user", "content": key_block}],
    }
    out = Redaction(Replacer(KEY), NAMES, ScanOptions(), Allow(), FindingsCache()).body(body)
    assert "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0t" not in orjson.dumps(out).decode()
    assert out["system"] == body["system"]
