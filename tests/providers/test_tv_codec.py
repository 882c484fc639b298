from __future__ import annotations

import itertools
import json
import random

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from providers.emulators.tradingview import frame as emulator_frame
from providers.errors import InvalidRequestError, ProtocolError, TransientError
from providers.tradingview import codec
from providers.tradingview.codec import (
    Connection,
    CriticalError,
    DataUpdate,
    FrameDecoder,
    Heartbeat,
    Hello,
    ProtocolErrorEvent,
    QuoteCompleted,
    QuoteData,
    RawBar,
    SeriesCompleted,
    SeriesError,
    SeriesLoading,
    SymbolError,
    SymbolResolved,
    TimescaleUpdate,
    UnknownMessage,
    encode_frame,
    encode_heartbeat,
    encode_message,
)

HELLO = '{"session_id":"<0.1.2>_x","timestamp":1,"release":"r1","protocol":"json"}'
QSD = encode_message("qsd", ["qs_a", {"n": "NSE:NIFTY", "s": "ok", "v": {"lp": 1.5}}])
TSU = encode_message(
    "timescale_update",
    [
        "cs_a",
        {
            "sds_1": {
                "s": [
                    {"i": 0, "v": [1700000000, 1, 2, 0.5, 1.5, 10]},
                    {"i": 1, "v": [1700000060, 1.5, 2, 1, 1.2]},
                ],
                "t": "s1",
            },
            "st1": {"st": []},
        },
    ],
)
STREAM = [
    encode_frame(HELLO),
    encode_heartbeat(1),
    QSD,
    TSU,
    encode_heartbeat(2),
    encode_message("series_completed", ["cs_a", "sds_1", "streaming", "s1", {}]),
    encode_message("notify_user", ["x"]),
]


def decode_all(chunks: list[str]) -> list[codec.Event]:
    conn = Connection()
    events: list[codec.Event] = []
    for chunk in chunks:
        events.extend(conn.receive_data(chunk))
    return events


# ---------------------------------------------------------------- framing


def test_frame_is_marker_length_marker_payload() -> None:
    assert encode_frame("~h~7") == "~m~4~m~~h~7"
    assert encode_heartbeat(7) == "~m~4~m~~h~7"


def test_message_is_compact_ascii_json() -> None:
    frame = encode_message("set_locale", ["en", "US"])
    assert frame == '~m~34~m~{"m":"set_locale","p":["en","US"]}'
    assert encode_message("x", ["₹"]).isascii()


def test_frame_length_counts_utf16_code_units_like_javascript_string_length() -> None:
    # Devanagari: 1 unit per character (3 UTF-8 bytes each); an emoji: 2 units (1 Python char).
    assert encode_frame("निफ्टी") == "~m~6~m~निफ्टी"
    assert encode_frame("\U0001f600") == "~m~2~m~\U0001f600"
    assert encode_frame("a😀b") == "~m~4~m~a😀b"
    assert codec.utf16_length("₹ 한국어 😀") == 8


def test_decoder_reads_lengths_as_utf16_code_units() -> None:
    # Hand-counted headers, as TradingView's JavaScript server writes them.
    hindi = '{"m":"x","p":["निफ्टी 50"]}'  # 27 characters and code units, 39 UTF-8 bytes
    emoji = '{"m":"x","p":["😀"]}'  # 19 characters, 20 UTF-16 code units, 22 UTF-8 bytes
    stream = f"~m~27~m~{hindi}~m~20~m~{emoji}~m~4~m~~h~1"
    assert FrameDecoder().feed(stream) == [hindi, emoji, "~h~1"]


def test_a_byte_counted_length_puts_the_stream_out_of_step() -> None:
    # What the decoder used to expect: the UTF-8 byte count. It overshoots into the next message.
    hindi = '{"m":"x","p":["निफ्टी"]}'
    stream = f"~m~{len(hindi.encode())}~m~{hindi}" + encode_heartbeat(1) + QSD
    with pytest.raises(ProtocolError, match="frame header"):
        Connection().receive_data(stream)


def test_a_length_ending_between_the_halves_of_a_surrogate_pair_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="inside a character"):
        Connection().receive_data("~m~2~m~a\U0001f600~m~4~m~~h~1")


def test_bytes_split_inside_a_utf8_character_wait_for_the_rest() -> None:
    data = encode_frame('{"m":"x","p":["😀 निफ्टी"]}').encode()
    cut = data.index("😀".encode()) + 2  # inside the emoji's four bytes
    decoder = FrameDecoder()
    assert decoder.feed(data[:cut]) == []
    assert decoder.buffered > 0
    assert decoder.feed(data[cut:]) == ['{"m":"x","p":["😀 निफ्टी"]}']
    assert decoder.buffered == 0


def test_invalid_utf8_bytes_are_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="UTF-8"):
        FrameDecoder().feed(b"~m~2~m~\xff\xfe")


def test_a_long_message_in_many_frames_is_joined_once_complete() -> None:
    payload = '{"m":"x","p":["' + "निफ्टी😀" * 2000 + '"]}'
    stream = encode_frame(payload) + encode_heartbeat(3)
    decoder = FrameDecoder()
    out: list[str] = []
    for i in range(0, len(stream), 100):
        out += decoder.feed(stream[i : i + 100])
    assert out == [payload, "~h~3"]
    assert decoder.buffered == 0


def test_several_messages_in_one_frame_decode_in_order() -> None:
    events = decode_all(["".join(STREAM)])
    assert [type(e) for e in events] == [
        Hello,
        Heartbeat,
        QuoteData,
        TimescaleUpdate,
        Heartbeat,
        SeriesCompleted,
        UnknownMessage,
    ]


def test_a_message_split_across_frames_is_buffered_until_complete() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(QSD[:2]) == []
    assert decoder.feed(QSD[2:5]) == []
    assert decoder.feed(QSD[5:20]) == []
    assert decoder.buffered == 20
    assert decoder.feed(QSD[20:]) == [QSD.split("~m~", 2)[2]]
    assert decoder.buffered == 0


@given(st.lists(st.integers(min_value=0, max_value=len("".join(STREAM))), max_size=30))
def test_any_split_of_a_stream_decodes_to_the_same_events(cuts: list[int]) -> None:
    stream = "".join(STREAM)
    bounds = sorted({0, *cuts, len(stream)})
    chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    assert decode_all(chunks) == decode_all([stream])


PARAM = st.one_of(st.text(max_size=10), st.integers(), st.floats(allow_nan=False))
MESSAGES = st.lists(
    st.tuples(st.text(max_size=8), st.lists(PARAM, max_size=4)), min_size=1, max_size=6
)


@given(MESSAGES, st.randoms(use_true_random=False))
def test_any_messages_round_trip_through_encoder_and_decoder(
    messages: list[tuple[str, list[object]]], rnd: random.Random
) -> None:
    stream = "".join(encode_message(m, p) for m, p in messages)
    cut = rnd.randint(0, len(stream))
    decoder = FrameDecoder()
    payloads = decoder.feed(stream[:cut]) + decoder.feed(stream[cut:])
    assert [json.loads(p) for p in payloads] == [{"m": m, "p": p} for m, p in messages]


# ---------------------------------------------------------------- events


def test_heartbeat_event_carries_the_exact_reply_frame() -> None:
    [event] = Connection().receive_data("~m~5~m~~h~42")
    assert event == Heartbeat("~h~42")
    assert event.reply == "~m~5~m~~h~42"


def test_hello_is_recognised_and_kept() -> None:
    conn = Connection()
    [event] = conn.receive_data(encode_frame(HELLO))
    assert isinstance(event, Hello)
    assert (event.session_id, event.release, event.protocol) == ("<0.1.2>_x", "r1", "json")
    assert conn.hello is event


def test_quote_and_bar_events_are_typed() -> None:
    events = decode_all(STREAM[2:4])
    assert events[0] == QuoteData("qs_a", "NSE:NIFTY", "ok", {"lp": 1.5})
    tsu = events[1]
    assert isinstance(tsu, TimescaleUpdate) and tsu.session == "cs_a"
    # The study entry without "s" is skipped; a bar without volume gets volume 0.
    assert tsu.series == {
        "sds_1": [
            RawBar(0, 1700000000, 1, 2, 0.5, 1.5, 10),
            RawBar(1, 1700000060, 1.5, 2, 1, 1.2, 0.0),
        ]
    }


@pytest.mark.parametrize(
    ("method", "params", "expected"),
    [
        ("quote_completed", ["qs_a", "NSE:NIFTY"], QuoteCompleted("qs_a", "NSE:NIFTY")),
        ("du", ["cs_a", {"sds_1": {"s": []}}], DataUpdate("cs_a", {"sds_1": []})),
        ("series_loading", ["cs_a", "sds_1", "s1"], SeriesLoading("cs_a", "sds_1")),
        (
            "symbol_resolved",
            ["cs_a", "sds_sym_1", {"timezone": "Asia/Kolkata"}],
            SymbolResolved("cs_a", "sds_sym_1", {"timezone": "Asia/Kolkata"}),
        ),
        (
            "symbol_error",
            ["cs_a", "sds_sym_1", "invalid symbol"],
            SymbolError("cs_a", "sds_sym_1", "invalid symbol"),
        ),
        (
            "series_error",
            ["cs_a", "sds_1", "s1", "invalid interval"],
            SeriesError("cs_a", "sds_1", "s1 invalid interval"),
        ),
        ("critical_error", ["cs_a", "boom"], CriticalError("cs_a boom", ["cs_a", "boom"])),
        ("protocol_error", ["wrong data"], ProtocolErrorEvent("wrong data", ["wrong data"])),
        ("study_loading", [1, 2], UnknownMessage("study_loading", [1, 2])),
    ],
)
def test_each_server_method_becomes_its_event(method: str, params: list, expected) -> None:
    assert Connection().receive_data(encode_message(method, params)) == [expected]


# ---------------------------------------------------------------- malformed input


@pytest.mark.parametrize(
    "data",
    [
        "~m~3~m~{}{}",  # length too short: next header is garbage
        "~m~x~m~{}",  # non-numeric length
        "~m~~m~{}",  # empty length
        "~m~-1~m~{}",  # sign is not a digit
        "~m~99999999999~m~",  # length header too long
        "hello",  # no header at all
        "~m~5~m~{bad}",  # bad JSON
        "~m~2~m~[]",  # JSON but not an object
        encode_frame('{"m":1,"p":1}'),  # wrong message shape
        encode_frame('{"m":"qsd","p":["x"]}'),  # known method, wrong params
        encode_frame('{"m":"qsd","p":["x",{"n":"A","s":"ok","v":[]}]}'),
        "~m~6~m~~h~abc",  # malformed heartbeat
        encode_message("du", ["cs", {"s1": {"s": [{"i": 0, "v": [1e20, 1, 1, 1, 1, 1]}]}}]),
        encode_message("du", ["cs", {"s1": {"s": [{"i": 0, "v": [1, "a", 1, 1, 1]}]}}]),
        encode_message("du", ["cs", {"s1": {"s": [{"i": True, "v": [1, 1, 1, 1, 1]}]}}]),
        "~m~1~m~\U0001f600",  # length ends between the two halves of a surrogate pair
        "~m~2~m~ééé~m~4~m~~h~1",  # non-ASCII length too short: next header is garbage
        "~m~" + "[" * 3000 + "~m~",  # not digits
        "~m~3000~m~" + "[" * 3000,  # deeply nested JSON
    ],
)
def test_malformed_input_raises_protocol_error(data: str) -> None:
    with pytest.raises(ProtocolError) as info:
        Connection().receive_data(data)
    assert isinstance(info.value, TransientError)


def test_length_above_the_limit_is_refused_without_waiting_for_the_payload() -> None:
    conn = Connection(max_message_size=100)
    with pytest.raises(ProtocolError, match="exceeds"):
        conn.receive_data("~m~101~m~{")


def test_a_failed_connection_stays_failed() -> None:
    conn = Connection()
    with pytest.raises(ProtocolError):
        conn.receive_data("~m~5~m~{bad}")
    assert conn.failed
    with pytest.raises(ProtocolError, match="already failed"):
        conn.receive_data(QSD)


def test_error_messages_never_quote_payload_bytes() -> None:
    with pytest.raises(ProtocolError) as info:
        Connection().receive_data("~m~SECRET-TOKEN~m~{}")
    assert "SECRET" not in str(info.value)


@settings(max_examples=300)
@given(
    st.lists(
        st.one_of(
            st.text(max_size=40),
            st.sampled_from(["~m~", "~h~", "~m~5~m~", "{", "}", '"m"', "1", "~"]),
        ),
        max_size=20,
    )
)
def test_random_text_never_raises_anything_but_protocol_error(parts: list[str]) -> None:
    conn = Connection(max_message_size=1000)
    try:
        for part in parts:
            conn.receive_data(part)
    except ProtocolError:
        pass


@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_but_protocol_error(data: bytes) -> None:
    try:
        Connection().receive_data(b"~m~" + data)
    except ProtocolError:
        pass


# ---------------------------------------------------------------- commands


def payload_of(frame: str) -> dict:
    [payload] = FrameDecoder().feed(frame)
    return json.loads(payload)


def test_session_ids_are_prefixed_twelve_random_characters_from_the_injected_rng() -> None:
    qs = codec.new_session_id("qs", random.Random(1))
    assert qs == codec.new_session_id("qs", random.Random(1))
    assert qs.startswith("qs_") and len(qs) == 15 and qs[3:].isalnum() and qs[3:].islower()
    assert codec.new_session_id("cs", random.Random(2)).startswith("cs_")


def test_commands_encode_the_documented_parameters() -> None:
    assert payload_of(codec.set_auth_token("tok")) == {"m": "set_auth_token", "p": ["tok"]}
    assert payload_of(codec.set_locale())["p"] == ["en", "US"]
    assert payload_of(codec.quote_create_session("qs_1"))["p"] == ["qs_1"]
    assert payload_of(codec.quote_set_fields("qs_1", ["lp", "ch"]))["p"] == ["qs_1", "lp", "ch"]
    assert payload_of(codec.quote_add_symbols("qs_1", ["nse:nifty"]))["p"] == ["qs_1", "NSE:NIFTY"]
    assert payload_of(codec.quote_remove_symbols("qs_1", ["NSE:A"]))["m"] == "quote_remove_symbols"
    assert payload_of(codec.chart_create_session("cs_1"))["p"] == ["cs_1", ""]
    assert payload_of(codec.resolve_symbol("cs_1", "sds_sym_1", "NSE:NIFTY"))["p"] == [
        "cs_1",
        "sds_sym_1",
        '={"symbol":"NSE:NIFTY","adjustment":"splits"}',
    ]
    assert payload_of(codec.create_series("cs_1", "sds_1", "s1", "sds_sym_1", "1D", 300))["p"] == [
        "cs_1",
        "sds_1",
        "s1",
        "sds_sym_1",
        "1D",
        300,
    ]
    assert payload_of(codec.modify_series("cs_1", "sds_1", "s2", "sds_sym_1", "5"))["p"] == [
        "cs_1",
        "sds_1",
        "s2",
        "sds_sym_1",
        "5",
        "",
    ]
    more = payload_of(codec.request_more_data("cs_1", "sds_1", 5000))
    assert more["p"] == ["cs_1", "sds_1", 5000]
    assert payload_of(codec.remove_series("cs_1", "sds_1"))["p"] == ["cs_1", "sds_1"]
    assert payload_of(codec.chart_delete_session("cs_1"))["p"] == ["cs_1"]


def test_commands_refuse_unknown_intervals_and_symbols() -> None:
    with pytest.raises(InvalidRequestError):
        codec.create_series("cs_1", "sds_1", "s1", "sds_sym_1", "2", 10)
    with pytest.raises(InvalidRequestError):
        codec.modify_series("cs_1", "sds_1", "s1", "sds_sym_1", "1d")
    with pytest.raises(InvalidRequestError):
        codec.resolve_symbol("cs_1", "sds_sym_1", 'NSE:X","adjustment":"none')


# ---------------------------------------------------------------- the ASCII fast path

FRAGMENTS = st.sampled_from(
    [
        "~m~",
        "~m~3~m~abc",
        "~m~2~m~{}",
        "~m~5~m~~h~42",
        "~m~8~m~",
        "~m~00000000003~m~",
        "~",
        "m",
        "0",
        "1",
        "5",
        "9",
        "12",
        "x",
        "{}",
        "~h~",
        "é",
        "₹",
        "😀",
        "~m~2~m~😀",
        "~m~1~m~😀",
    ]
)


@settings(max_examples=400)
@given(st.lists(st.lists(FRAGMENTS, max_size=8).map("".join), min_size=1, max_size=3))
def test_text_and_its_utf8_bytes_decode_alike_payloads_errors_and_buffer(chunks: list[str]) -> None:
    # `str` input takes the ASCII fast path where it can; bytes always take the byte walk.
    def run(feed_bytes: bool) -> list[tuple[object, ...]]:
        decoder = FrameDecoder(max_message_size=7)
        seen: list[tuple[object, ...]] = []
        for chunk in chunks:
            try:
                out = decoder.feed(chunk.encode() if feed_bytes else chunk)
                seen.append(("ok", out, decoder.buffered, decoder.failed))
            except ProtocolError as exc:
                seen.append(("error", exc.message, decoder.buffered, decoder.failed))
        return seen

    assert run(False) == run(True)


def test_whole_messages_then_a_split_tail_keep_the_tail_for_the_next_frame() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(QSD + QSD[:10]) == [QSD.split("~m~", 2)[2]]
    assert decoder.buffered == 10
    assert decoder.feed(QSD[10:]) == [QSD.split("~m~", 2)[2]]


def test_json_with_surrounding_whitespace_reads_as_json_loads_does() -> None:
    payload = ' {"m":"qsd","p":["qs_a",{"n":"NSE:A","s":"ok","v":{"lp":1}}]} '
    assert Connection().receive_data(encode_frame(payload)) == [
        QuoteData("qs_a", "NSE:A", "ok", {"lp": 1})
    ]
    with pytest.raises(ProtocolError, match="not valid JSON"):
        Connection().receive_data(encode_frame('{"m":"qsd"} {}'))


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(JSON_VALUES, st.booleans())
def test_payloads_decode_exactly_as_json_loads_decodes_them(value: object, ascii: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii)
    assert codec._loads(text) == json.loads(text)
    assert repr(codec._loads(text)) == repr(json.loads(text))  # -0.0 stays -0.0; 1 stays int


@pytest.mark.parametrize(
    "text",
    [
        '{"lp": NaN}',  # what the fast reader refuses and `json` reads
        '{"lp": Infinity, "ch": -Infinity}',
        "[1e400]",
        '"\\ud800"',  # an escaped lone surrogate
        '{"a": 1, "a": 2}',  # the last duplicate wins, as in `json`
    ],
)
def test_what_json_loads_reads_beyond_strict_json_reads_the_same(text: str) -> None:
    assert repr(codec._loads(text)) == repr(json.loads(text))


@pytest.mark.parametrize("text", ["{", '{"m": "qsd"} {}', "[" * 5000 + "]" * 5000, "\x00"])
def test_what_json_loads_refuses_is_still_refused_as_invalid_json(text: str) -> None:
    with pytest.raises((ValueError, RecursionError)):
        json.loads(text)
    with pytest.raises(ProtocolError, match="not valid JSON"):
        codec.parse_payload(text)


def test_create_series_sends_exactly_six_parameters_with_the_canonical_interval() -> None:
    params = payload_of(codec.create_series("cs_1", "sds_1", "s1", "sds_sym_1", "D", 300))["p"]
    assert params == ["cs_1", "sds_1", "s1", "sds_sym_1", "1D", 300]


# ---------------------------------------------------------------- against the emulator's framing
# The emulator frames with its own function, written from the documented fact (lengths in UTF-16
# code units), so these properties check our decoder against an independent encoder.

#: Any Unicode text (astral characters included), and pieces that look like framing.
PAYLOADS = st.lists(
    st.one_of(
        st.text(),
        st.sampled_from(["~m~", "~m~5~m~", "~h~1", "😀", "\U0010ffff", "निफ्टी", "한국어"]),
    ),
    max_size=4,
).map("".join)


def _chunks(stream: str, cuts: list[int]) -> list[str]:
    bounds = sorted({0, *(c % (len(stream) + 1) for c in cuts), len(stream)})
    return [stream[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=300)
@given(st.lists(PAYLOADS, min_size=1, max_size=6), st.lists(st.integers(min_value=0), max_size=12))
def test_emulator_framed_payloads_split_anywhere_come_back_identical(
    payloads: list[str], cuts: list[int]
) -> None:
    stream = "".join(emulator_frame(p) for p in payloads)
    decoder = FrameDecoder()
    out = [p for chunk in _chunks(stream, cuts) for p in decoder.feed(chunk)]
    assert out == payloads
    assert decoder.buffered == 0


@settings(max_examples=200)
@given(st.lists(PAYLOADS, min_size=1, max_size=6), st.lists(st.integers(min_value=0), max_size=12))
def test_emulator_framed_utf8_bytes_split_anywhere_come_back_identical(
    payloads: list[str], cuts: list[int]
) -> None:
    # Bytes may be cut inside a character's UTF-8 sequence; the decoder waits for the rest.
    data = "".join(emulator_frame(p) for p in payloads).encode()
    bounds = sorted({0, *(c % (len(data) + 1) for c in cuts), len(data)})
    decoder = FrameDecoder()
    out = [p for a, b in itertools.pairwise(bounds) for p in decoder.feed(data[a:b])]
    assert out == payloads


def _with_wrong_length(frames: list[str], index: int, delta: int) -> str:
    header, _, rest = frames[index].partition("~m~")[2].partition("~m~")
    wrong = max(0, int(header) + delta)
    return "".join([*frames[:index], f"~m~{wrong}~m~{rest}", *frames[index + 1 :]])


@settings(max_examples=300)
@given(
    st.lists(PAYLOADS, min_size=1, max_size=5),
    st.integers(min_value=0),
    st.integers(min_value=-30, max_value=30).filter(bool),
    st.lists(st.integers(min_value=0), max_size=8),
)
def test_a_wrong_declared_length_never_raises_anything_but_protocol_error(
    payloads: list[str], which: int, delta: int, cuts: list[int]
) -> None:
    frames = [emulator_frame(p) for p in payloads]
    index = which % len(frames)
    if codec.utf16_length(payloads[index]) + delta < 0:
        delta = -codec.utf16_length(payloads[index]) or 1
    stream = _with_wrong_length(frames, index, delta)
    decoder = FrameDecoder()
    out: list[str] = []
    try:
        for chunk in _chunks(stream, cuts):
            out += decoder.feed(chunk)
    except ProtocolError:
        assert decoder.failed
        return
    # No error (yet): a message of another length cannot have come back as the original.
    assert out != payloads


#: Ends every stream in the next test: whatever a wrong length lands on inside it is no header.
SENTINEL = "~m~10~m~xxxxxxxxxx"


@settings(max_examples=300)
@given(
    st.lists(PAYLOADS.map(lambda p: p.replace("~", "")), min_size=1, max_size=5),
    st.one_of(st.integers(min_value=-40, max_value=-1), st.integers(min_value=1, max_value=7)),
    st.lists(st.integers(min_value=0), max_size=8),
)
def test_a_wrong_length_on_the_last_message_is_always_a_protocol_error(
    payloads: list[str], delta: int, cuts: list[int]
) -> None:
    frames = [emulator_frame(p) for p in payloads]
    units = codec.utf16_length(payloads[-1])
    if units + delta < 0:
        assume(units > 0)
        delta = -units
    stream = _with_wrong_length(frames, len(frames) - 1, delta) + SENTINEL
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError):
        for chunk in _chunks(stream, cuts):
            decoder.feed(chunk)
