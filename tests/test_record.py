"""The cache record: every field round-trips, and anything that is not a well-formed record is a RecordError."""

from __future__ import annotations

import dataclasses
import pathlib
import pickle
import struct
import zlib
from typing import Any

import orjson
import pytest

from _helpers import R1_PROMPT, load_json_fixture
from fw_rollouts import FwResponse, Usage
from fw_rollouts._logprobs import Logprobs
from fw_rollouts._parsing import ResponseSpec, parse_completion
from fw_rollouts._record import FORMAT_VERSION, MAGIC, RecordError, decode_record, encode_record
from fw_rollouts._templates import split_think


def fixture_sample(name: str = "fireworks/completion-legacy-logprobs-echo.json", index: int = 3) -> FwResponse:
    body = load_json_fixture(name)
    spec = ResponseSpec(prompt=R1_PROMPT, echo=True, logprobs=True, split_reasoning=split_think)
    return parse_completion(body, spec, [index])[0]


def logprobs(n: int = 6, *, top: int = 3, echo: bool = True) -> Logprobs:
    tokens = [f"t{i}é" for i in range(n)]
    offsets = [3 * i for i in range(n)]
    alternatives = [{f"a{i}-{j}": -0.5 * j for j in range(top)} for i in range(n)]
    return Logprobs(
        tokens,
        [None, *(-0.25 * i for i in range(1, n))],
        [None, *alternatives[1:]],
        offsets,
        list(range(100, 100 + n)),
        sampling_logprobs=[None, *(-0.3 * i for i in range(1, n))],
        num_prompt_tokens=2 if echo else 0,
        prompt_length=6 if echo else 0,
        echo=echo,
    )


def full_sample(**changes: Any) -> FwResponse:
    """A sample with a value other than the default in every stored field."""
    fields: dict[str, Any] = {
        "full": "Think…</think>答え: 4 🎉\n\t\x00",
        "content": "答え: 4 🎉\n\t\x00",
        "reasoning": "Think…",
        "finish_reason": "length",
        "completed_reasoning": True,
        "usage": Usage(12, 7, 19, 5),
        "seed": 2**63 - 1,
        "model": "accounts/fireworks/models/deepseek-r1",
        "response_id": "cmpl-ü-1",
        "created": 1_700_000_123,
        "logprobs": logprobs(),
        "echo": True,
        "prompt": "the prompt",
        "index": 3,
    }
    fields.update(changes)
    return FwResponse(**fields)


def round_trip(sample: FwResponse, prompt: str | None = None) -> FwResponse:
    return decode_record(encode_record(sample), sample.prompt if prompt is None else prompt)


def forge(
    header: Any = None, logprobs_part: bytes = b"", *, version: int = FORMAT_VERSION, raw: bytes | None = None
) -> bytes:
    """A record with a correct CRC around whatever header (or raw header bytes) a test wants."""
    head = orjson.dumps(header) if raw is None else raw
    body = MAGIC + struct.pack("<BI", version, len(head)) + head + logprobs_part
    return body + zlib.crc32(body).to_bytes(4, "little")


def header_of(sample: FwResponse) -> dict[str, Any]:
    data = encode_record(sample)
    (length,) = struct.unpack_from("<I", data, 5)
    header: dict[str, Any] = orjson.loads(data[9 : 9 + length])
    return header


class TestRoundTrip:
    def test_every_field(self) -> None:
        original = full_sample()
        restored = round_trip(original)
        assert restored == dataclasses.replace(original, cached=True)
        for field in dataclasses.fields(FwResponse):
            if field.name != "cached":
                assert getattr(restored, field.name) == getattr(original, field.name), field.name
        assert restored.cached is True

    @pytest.mark.parametrize("completed", [True, False, None])
    def test_completed_reasoning(self, completed: bool | None) -> None:
        assert round_trip(full_sample(completed_reasoning=completed)).completed_reasoning is completed

    @pytest.mark.parametrize("seed", [None, 0, -7, 2**63 - 1])
    def test_seed(self, seed: int | None) -> None:
        assert round_trip(full_sample(seed=seed)).seed == seed

    @pytest.mark.parametrize("cached_tokens", [None, 0, 11])
    def test_usage(self, cached_tokens: int | None) -> None:
        usage = Usage(3, 4, 7, cached_tokens)
        assert round_trip(full_sample(usage=usage)).usage == usage

    def test_without_logprobs(self) -> None:
        original = FwResponse(full="4", content="4", finish_reason="stop", seed=9, usage=Usage(3, 1, 4), prompt="Q")
        restored = round_trip(original)
        assert restored == dataclasses.replace(original, cached=True)
        assert restored.logprobs is None
        assert header_of(original)["logprobs_bytes"] is None

    def test_defaults(self) -> None:
        original = FwResponse(full="")
        assert round_trip(original) == dataclasses.replace(original, cached=True)

    def test_fixture_with_echo(self) -> None:
        original = fixture_sample()
        assert original.logprobs is not None and original.logprobs.num_prompt_tokens == 12
        restored = round_trip(original, R1_PROMPT)
        assert restored == dataclasses.replace(original, cached=True)
        assert restored.get_generation_logprobs() == original.get_generation_logprobs()
        assert restored.get_prompt_logprobs() == original.get_prompt_logprobs()
        assert restored.usage == Usage(12, 7, 19, 0)
        assert (restored.reasoning, restored.content, restored.completed_reasoning) == (
            "Okay, so I need to add",
            "",
            False,
        )

    def test_fixture_content_shape_keeps_sampling_logprobs(self) -> None:
        original = fixture_sample("fireworks/completion-content-logprobs-echo.json", 0)
        restored = round_trip(original, R1_PROMPT)
        assert restored.logprobs is not None and original.logprobs is not None
        assert restored.logprobs.sampling_logprobs == original.logprobs.sampling_logprobs
        assert restored == dataclasses.replace(original, cached=True)

    def test_large(self) -> None:
        text = "word ✓ " * 200_000
        original = full_sample(full=text, content=text, logprobs=logprobs(20_000, top=5))
        data = encode_record(original)
        assert len(data) > 1_400_000
        restored = decode_record(data, "p")
        assert restored == dataclasses.replace(original, prompt="p", cached=True)

    def test_logprobs_stay_packed_until_read(self) -> None:
        original = full_sample()
        assert original.logprobs is not None
        restored = round_trip(original)
        assert restored.logprobs is not None
        assert restored.logprobs._packed == original.logprobs.packed()  # not unpacked by decoding
        assert restored.logprobs.tokens == original.logprobs.tokens

    def test_prompt_is_not_stored(self) -> None:
        original = full_sample(prompt="a very particular prompt")
        data = encode_record(original)
        assert b"a very particular prompt" not in data
        assert decode_record(data, "another prompt").prompt == "another prompt"

    def test_layout(self) -> None:
        data = encode_record(full_sample())
        assert data[:4] == MAGIC == b"FWRC"
        assert data[4] == FORMAT_VERSION == 1
        header = header_of(full_sample())
        assert list(header) == [
            "full",
            "content",
            "reasoning",
            "finish_reason",
            "completed_reasoning",
            "usage",
            "seed",
            "model",
            "response_id",
            "created",
            "echo",
            "index",
            "logprobs_bytes",
        ]
        assert header["usage"] == {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19, "cached_tokens": 5}
        (length,) = struct.unpack_from("<I", data, 5)
        assert header["logprobs_bytes"] == len(data) - 9 - length - 4
        assert zlib.crc32(data[:-4]) == int.from_bytes(data[-4:], "little")

    def test_same_sample_same_bytes(self) -> None:
        assert encode_record(full_sample()) == encode_record(full_sample())

    def test_accepts_bytearray_and_memoryview(self) -> None:
        data = encode_record(full_sample())
        assert decode_record(bytearray(data), "p") == decode_record(memoryview(data), "p") == decode_record(data, "p")


class TestCorruption:
    def test_is_a_value_error(self) -> None:
        assert issubclass(RecordError, ValueError)

    def test_every_flipped_byte_is_detected(self) -> None:
        data = encode_record(full_sample())
        for position in range(len(data)):
            for flip in (0x01, 0x80, 0xFF):
                corrupt = bytearray(data)
                corrupt[position] ^= flip
                with pytest.raises(RecordError):
                    decode_record(bytes(corrupt), "p")

    def test_every_truncation_is_detected(self) -> None:
        data = encode_record(full_sample())
        for length in range(len(data)):
            with pytest.raises(RecordError):
                decode_record(data[:length], "p")

    def test_trailing_bytes_are_detected(self) -> None:
        with pytest.raises(RecordError):
            decode_record(encode_record(full_sample()) + b"\x00", "p")

    def test_crc_mismatch_message(self) -> None:
        data = bytearray(encode_record(full_sample()))
        data[20] ^= 1
        with pytest.raises(RecordError, match="CRC32"):
            decode_record(bytes(data), "p")

    @pytest.mark.parametrize("data", [b"", b"F", b"FWRC", b"GIF89a...", b'{"full": "x"}', b"\x00" * 64])
    def test_not_a_record(self, data: bytes) -> None:
        with pytest.raises(RecordError):
            decode_record(data, "p")

    def test_not_bytes(self) -> None:
        with pytest.raises(RecordError, match="bytes, not str"):
            decode_record("FWRC", "p")  # type: ignore[arg-type]

    @pytest.mark.parametrize("version", [0, 2, 255])
    def test_unknown_version(self, version: int) -> None:
        data = forge(header_of(full_sample()), version=version)
        with pytest.raises(RecordError, match=f"version {version} "):
            decode_record(data, "p")

    def test_fields_in_another_order_are_read(self) -> None:
        sample = full_sample(logprobs=None)
        header = header_of(sample)
        shuffled = {name: header[name] for name in reversed(header)}
        shuffled["usage"] = dict(reversed(header["usage"].items()))
        assert list(shuffled) != list(header)
        assert decode_record(forge(shuffled), "p") == dataclasses.replace(sample, prompt="p", cached=True)

    def test_forge_makes_valid_records(self) -> None:
        # The corruption cases below differ from this by the one thing they break.
        sample = full_sample(logprobs=None)
        assert decode_record(forge(header_of(sample)), "p") == dataclasses.replace(sample, prompt="p", cached=True)


class TestOldEntries:
    def test_old_pickled_entry_is_rejected(self) -> None:
        # The layout of the pickled records before this format: (format, positional fields).
        fields = ("4", "4", "", "stop", None, (3, 1, 4, None), 9, "m", "id", 0, None, False, 0)
        with pytest.raises(RecordError, match="pickle"):
            decode_record(pickle.dumps((2, fields), protocol=pickle.HIGHEST_PROTOCOL), "p")

    @pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
    def test_a_pickle_that_would_run_code_is_never_loaded(self, tmp_path: pathlib.Path, protocol: int) -> None:
        target = tmp_path / "ran"

        class Armed:
            def __reduce__(self) -> tuple[Any, ...]:
                return (pathlib.Path.touch, (target,))

        blob = pickle.dumps(Armed(), protocol=protocol)
        with pytest.raises(RecordError):
            decode_record(blob, "p")
        assert not target.exists()
        pickle.loads(blob)  # the blob is armed: loading it does run code
        assert target.exists()

    def test_a_pickle_behind_the_magic_is_never_loaded(self, tmp_path: pathlib.Path) -> None:
        target = tmp_path / "ran"

        class Armed:
            def __reduce__(self) -> tuple[Any, ...]:
                return (pathlib.Path.touch, (target,))

        with pytest.raises(RecordError, match="not JSON"):
            decode_record(forge(raw=pickle.dumps(Armed())), "p")
        assert not target.exists()


def broken(**changes: Any) -> dict[str, Any]:
    header = header_of(full_sample(logprobs=None))
    for name, value in changes.items():
        if name.startswith("usage_"):
            header["usage"][name[len("usage_") :]] = value
        elif value is _DELETE:
            del header[name]
        else:
            header[name] = value
    return header


_DELETE = object()

BAD_HEADERS: list[tuple[str, Any, str]] = [
    ("array", [1, 2], "JSON object"),
    ("string", "full", "JSON object"),
    ("null", None, "JSON object"),
    ("missing field", broken(model=_DELETE), "missing model"),
    ("extra field", {**broken(), "prompt": "p"}, "unexpected prompt"),
    ("full null", broken(full=None), "full must be a string"),
    ("full number", broken(full=4), "full must be a string"),
    ("finish_reason list", broken(finish_reason=["stop"]), "finish_reason must be a string"),
    ("bool for index", broken(index=True), "index must be a non-negative integer"),
    ("bool for created", broken(created=False), "created must be an integer"),
    ("bool for seed", broken(seed=True), "seed must be an integer or null"),
    ("float for created", broken(created=1.5), "created must be an integer"),
    ("string for seed", broken(seed="7"), "seed must be an integer or null"),
    ("negative index", broken(index=-1), "index must be a non-negative integer"),
    ("int for echo", broken(echo=1), "echo must be true or false"),
    ("null echo", broken(echo=None), "echo must be true or false"),
    ("int for completed_reasoning", broken(completed_reasoning=0), "completed_reasoning must be true or false or null"),
    ("usage list", broken(usage=[1, 2, 3, None]), "usage must be an object"),
    ("usage missing", broken(usage={"prompt_tokens": 1}), "usage fields: missing cached_tokens, completion_tokens"),
    ("usage bool", broken(usage_total_tokens=True), "usage.total_tokens must be a non-negative integer"),
    ("usage float", broken(usage_prompt_tokens=3.0), "usage.prompt_tokens must be a non-negative integer"),
    ("usage negative", broken(usage_completion_tokens=-2), "usage.completion_tokens must be"),
    ("cached_tokens string", broken(usage_cached_tokens="5"), "usage.cached_tokens must be a non-negative integer"),
    ("logprobs_bytes bool", broken(logprobs_bytes=False), "logprobs_bytes must be"),
    ("logprobs_bytes negative", broken(logprobs_bytes=-1), "logprobs_bytes must be"),
]


class TestMalformedHeaders:
    @pytest.mark.parametrize(("what", "header", "message"), BAD_HEADERS, ids=[b[0] for b in BAD_HEADERS])
    def test_is_a_record_error(self, what: str, header: Any, message: str) -> None:
        with pytest.raises(RecordError, match="header is malformed") as info:
            decode_record(forge(header), "p")
        assert message in str(info.value)

    @pytest.mark.parametrize("raw", [b"", b"{", b"\xff\xfe", b'{"full": "x"', b"[1,]", b"NaN"])
    def test_header_not_json(self, raw: bytes) -> None:
        with pytest.raises(RecordError, match="not JSON"):
            decode_record(forge(raw=raw), "p")

    def test_header_length_past_the_end(self) -> None:
        data = bytearray(forge(broken()))
        struct.pack_into("<I", data, 5, len(data))
        data[-4:] = zlib.crc32(data[:-4]).to_bytes(4, "little")
        with pytest.raises(RecordError, match="runs past the end"):
            decode_record(bytes(data), "p")

    @pytest.mark.parametrize(
        ("announced", "part"),
        [(None, b"xyz"), (3, b""), (3, b"xy"), (3, b"wxyz"), (0, b"x")],
    )
    def test_lengths_do_not_add_up(self, announced: int | None, part: bytes) -> None:
        with pytest.raises(RecordError, match="do not add up"):
            decode_record(forge(broken(logprobs_bytes=announced), part), "p")


class TestUnencodable:
    @pytest.mark.parametrize(
        ("changes", "message"),
        [
            ({"usage": Usage(1.5, 1, 2)}, "usage.prompt_tokens"),  # type: ignore[arg-type]
            ({"index": True}, "index"),
            ({"seed": "7"}, "seed"),
            ({"full": None}, "full"),
            ({"full": "lone \ud800 surrogate"}, "str"),
            ({"seed": 2**70}, "64"),
        ],
    )
    def test_raises_record_error(self, changes: dict[str, Any], message: str) -> None:
        with pytest.raises(RecordError, match="cannot store") as info:
            encode_record(full_sample(**changes))
        assert message in str(info.value)
