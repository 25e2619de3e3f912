"""The cache record: every field round-trips, and anything that is not a well-formed record is a RecordError."""

from __future__ import annotations

import dataclasses
import pathlib
import pickle
import struct
import zlib
from typing import Any

import pytest

from _helpers import R1_PROMPT, load_json_fixture
from fw_rollouts import FwResponse, Usage
from fw_rollouts._echo import PromptPart, with_prompt
from fw_rollouts._logprobs import Logprobs
from fw_rollouts._parsing import ResponseSpec, parse_completion
from fw_rollouts._record import (
    FIELDS,
    FORMAT_VERSION,
    MAGIC,
    PROMPT_MAGIC,
    PromptPartMissing,
    RecordError,
    decode_prompt_record,
    decode_record,
    encode_prompt_record,
    encode_record,
    key_tag,
)
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


FIXED = struct.Struct("<4sBBIqqQQQQQ7I")  # the layout in fw_rollouts._record's docstring, written out again


def fields_of(sample: FwResponse) -> dict[str, int]:
    """The fixed fields of ``sample``'s record, by name."""
    return dict(zip(FIELDS, FIXED.unpack_from(encode_record(sample))[2:], strict=True))


def forge(fields: dict[str, int], rest: bytes, *, version: int = FORMAT_VERSION) -> bytes:
    """A record with a correct CRC around whatever fixed fields and body a test wants."""
    body = FIXED.pack(MAGIC, version, *(fields[name] for name in FIELDS)) + rest
    return body + zlib.crc32(body).to_bytes(4, "little")


def body_of(sample: FwResponse) -> bytes:
    """The strings and logprobs of ``sample``'s record (between the fixed fields and the CRC)."""
    return encode_record(sample)[FIXED.size : -4]


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
        assert fields_of(original)["logprobs_bytes"] == 0 and not fields_of(original)["flags"] & 32

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
        sample = full_sample()
        data = encode_record(sample)
        assert data[:4] == MAGIC == b"FWRC"
        assert data[4] == FORMAT_VERSION == 3
        fields = fields_of(sample)
        assert fields["flags"] == 1 | 2 | 4 | 8 | 16 | 32
        assert fields["key_tag"] == 0  # written without a key
        assert FIXED.unpack_from(encode_record(sample, "k" * 64))[3] == zlib.crc32(b"k" * 64) == key_tag("k" * 64)
        assert (fields["seed"], fields["created"], fields["index"]) == (2**63 - 1, 1_700_000_123, 3)
        assert [fields[f"{name}_tokens"] for name in ("prompt", "completion", "total", "cached")] == [12, 7, 19, 5]
        texts = [sample.full, sample.content, sample.reasoning, sample.finish_reason, sample.model, sample.response_id]
        assert [fields[f"{name}_bytes"] for name in ("full", "content", "reasoning", "finish_reason", "model",
                "response_id")] == [len(t.encode()) for t in texts]  # fmt: skip
        assert sample.logprobs is not None and fields["logprobs_bytes"] == len(sample.logprobs.packed())
        assert data[FIXED.size :].startswith("".join(texts).encode())
        assert zlib.crc32(data[:-4]) == int.from_bytes(data[-4:], "little")

    def test_unknown_values_are_flags_not_zeros(self) -> None:
        sample = full_sample(seed=None, completed_reasoning=None, usage=Usage(1, 2, 3, None), logprobs=None)
        fields = fields_of(sample)
        assert fields["flags"] == 1 and fields["seed"] == 0 and fields["cached_tokens"] == 0
        back = round_trip(sample)
        assert back.seed is None and back.completed_reasoning is None and back.usage.cached_tokens is None
        assert round_trip(full_sample(seed=0, completed_reasoning=False)).seed == 0

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

    @pytest.mark.parametrize("version", [0, 4, 255])
    def test_unknown_version(self, version: int) -> None:
        sample = full_sample()
        data = forge(fields_of(sample), body_of(sample), version=version)
        with pytest.raises(RecordError, match=f"version {version} .*newer"):
            decode_record(data, "p")

    def test_version_1_is_older_and_refetched(self) -> None:
        sample = full_sample()
        data = forge(fields_of(sample), body_of(sample), version=1)
        with pytest.raises(RecordError, match=r"version 1 is older .* fetched again"):
            decode_record(data, "p")

    def test_forge_makes_valid_records(self) -> None:
        # The corruption cases below differ from this by the one thing they break.
        sample = full_sample()
        assert decode_record(forge(fields_of(sample), body_of(sample)), "p") == dataclasses.replace(
            sample, prompt="p", cached=True
        )


class TestKeyBinding:
    """A record read under another key than its own is refused: what a damaged database index hands back."""

    def test_read_under_its_own_key(self) -> None:
        sample = full_sample()
        assert decode_record(encode_record(sample, "a" * 64), "p", "a" * 64) == dataclasses.replace(
            sample, prompt="p", cached=True
        )

    def test_another_keys_record_is_refused(self) -> None:
        data = encode_record(full_sample(), "a" * 64)
        with pytest.raises(RecordError, match="another key"):
            decode_record(data, "p", "b" * 64)
        with pytest.raises(RecordError, match="another key"):
            decode_record(data, "p", "a" * 63 + "b")

    def test_a_record_written_without_a_key_is_refused_under_one(self) -> None:
        data = encode_record(full_sample())
        assert decode_record(data, "p").full == full_sample().full  # no key asked: no check
        with pytest.raises(RecordError, match="another key"):
            decode_record(data, "p", "a" * 64)

    def test_any_str_key(self) -> None:
        key = "lone \ud800 surrogate ✓"
        assert decode_record(encode_record(full_sample(), key), "p", key).cached

    def test_a_flipped_tag_is_caught_by_the_crc(self) -> None:
        data = bytearray(encode_record(full_sample(), "a" * 64))
        data[6] ^= 1
        with pytest.raises(RecordError, match="CRC32"):
            decode_record(bytes(data), "p", "a" * 64)


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

        sample = full_sample(logprobs=None)
        fields = {**fields_of(sample), "flags": 1 | 32, "logprobs_bytes": len(pickle.dumps(Armed()))}
        data = forge(fields, body_of(sample) + pickle.dumps(Armed()))
        with pytest.raises(RecordError, match="logprobs are malformed"):
            decode_record(data, "p")
        assert not target.exists()


class TestMalformedFields:
    """A record whose CRC is right (written by other code, or forged) but whose fields are not."""

    def sample(self) -> FwResponse:
        return full_sample(logprobs=None)

    @pytest.mark.parametrize("flags", [128, 255])
    def test_content_is_full_is_unknown_to_version_2(self, flags: int) -> None:
        fields = {**fields_of(self.sample()), "flags": flags}
        with pytest.raises(RecordError, match="unknown flags"):
            decode_record(forge(fields, body_of(self.sample()), version=2), "p")

    def test_content_bytes_beside_content_is_full(self) -> None:
        fields = {**fields_of(self.sample()), "flags": 128}
        with pytest.raises(RecordError, match="content bytes but says its content is its full text"):
            decode_record(forge(fields, body_of(self.sample())), "p")

    @pytest.mark.parametrize("flags", [64, 64 | 32, 64 | 1])
    @pytest.mark.parametrize("version", [2, 3])
    def test_shared_prompt_flag_without_echoed_logprobs(self, flags: int, version: int) -> None:
        fields = {**fields_of(self.sample()), "flags": flags}
        with pytest.raises(RecordError, match="shares a prompt part but has no echoed logprobs"):
            decode_record(forge(fields, body_of(self.sample()), version=version), "p")

    @pytest.mark.parametrize(("field", "delta"), [("full_bytes", 1), ("model_bytes", -1), ("logprobs_bytes", 3)])
    def test_lengths_do_not_add_up(self, field: str, delta: int) -> None:
        fields = fields_of(self.sample())
        fields[field] += delta
        with pytest.raises(RecordError, match="do not add up"):
            decode_record(forge(fields, body_of(self.sample())), "p")

    def test_logprobs_bytes_without_the_flag(self) -> None:
        fields = {**fields_of(self.sample()), "logprobs_bytes": 3}
        with pytest.raises(RecordError, match="says it has none"):
            decode_record(forge(fields, body_of(self.sample()) + b"xyz"), "p")

    def test_logprobs_that_are_not_packed_logprobs(self) -> None:
        fields = {**fields_of(self.sample()), "flags": 1 | 32, "logprobs_bytes": 40}
        with pytest.raises(RecordError, match="logprobs are malformed"):
            decode_record(forge(fields, body_of(self.sample()) + b"\x00" * 40), "p")

    def test_text_that_is_not_utf8(self) -> None:
        sample = full_sample(logprobs=None, full="ab")
        body = b"\xff\xfe" + body_of(sample)[2:]
        with pytest.raises(RecordError, match="not UTF-8"):
            decode_record(forge(fields_of(sample), body), "p")


class TestUnencodable:
    @pytest.mark.parametrize(
        ("changes", "message"),
        [
            ({"usage": Usage(1.5, 1, 2)}, "usage.prompt_tokens"),  # type: ignore[arg-type]
            ({"index": True}, "index"),
            ({"seed": "7"}, "seed"),
            ({"full": None}, "full"),
            ({"full": "lone \ud800 surrogate"}, "not valid Unicode"),
            ({"seed": 2**70}, "64"),
        ],
    )
    def test_raises_record_error(self, changes: dict[str, Any], message: str) -> None:
        with pytest.raises(RecordError, match="cannot store") as info:
            encode_record(full_sample(**changes))
        assert message in str(info.value)


def shared_fixture_sample() -> tuple[PromptPart, FwResponse]:
    """The Fireworks echo fixture's sample, sharing its prompt part (as the samples fetched after it do)."""
    echoed = fixture_sample()
    part = PromptPart.of(echoed)
    assert part is not None
    return part, with_prompt(echoed, part)


class TestSharedPrompt:
    """Flag 64: a sample whose prompt part is shared is stored as its generated positions; the part once, apart."""

    def test_the_record_holds_the_generated_positions_only(self) -> None:
        part, sample = shared_fixture_sample()
        record = encode_record(sample, "k")
        flags = fields_of(sample)["flags"]
        assert flags & 64 and flags & 1 and flags & 32
        assert sample.logprobs is not None
        assert fields_of(sample)["logprobs_bytes"] == len(sample.logprobs.get_generation_logprobs().packed())
        back = decode_record(record, R1_PROMPT, "k", part)
        assert back == dataclasses.replace(sample, cached=True) and back.get_prompt_logprobs() is part.logprobs
        assert back.logprobs is not None and back.logprobs.tokens[12:] == sample.logprobs.tokens[12:]

    def test_read_without_its_part_it_is_a_record_error(self) -> None:
        _, sample = shared_fixture_sample()
        with pytest.raises(PromptPartMissing, match="prompt's record is missing"):
            decode_record(encode_record(sample, "k"), R1_PROMPT, "k")
        assert issubclass(PromptPartMissing, RecordError)

    def test_generation_only_reads_it_without_its_part(self) -> None:
        # What `fw-rollouts cache` does: it cannot tell which prompt record is a sample's.
        _, sample = shared_fixture_sample()
        back = decode_record(encode_record(sample, "k"), "", "k", generation_only=True)
        assert sample.logprobs is not None and back.logprobs is not None
        assert back.echo is False and len(back.get_prompt_logprobs() or ()) == 0
        assert back.logprobs.tokens == sample.logprobs.get_generation_logprobs().tokens
        assert (back.full, back.seed, back.usage) == (sample.full, sample.seed, sample.usage)
        whole = fixture_sample()  # a record holding its own echo is read whole, as ever
        assert decode_record(encode_record(whole, "k"), R1_PROMPT, "k", generation_only=True) == dataclasses.replace(
            whole, cached=True
        )

    def test_a_part_of_another_prompt_is_refused(self) -> None:
        part, sample = shared_fixture_sample()
        with pytest.raises(ValueError, match="another prompt"):
            decode_record(encode_record(sample, "k"), "other", "k", part)

    def test_a_whole_echo_ignores_the_part(self) -> None:
        part, _ = shared_fixture_sample()
        whole = fixture_sample()
        back = decode_record(encode_record(whole, "k"), R1_PROMPT, "k", part)
        assert back == dataclasses.replace(whole, cached=True) and back.get_prompt_logprobs() is not part.logprobs

    def test_generated_positions_that_claim_an_echo_are_malformed(self) -> None:
        part, sample = shared_fixture_sample()
        whole = fixture_sample()
        assert whole.logprobs is not None
        packed = whole.logprobs.packed()
        fields = {**fields_of(sample), "logprobs_bytes": len(packed)}
        text = body_of(sample)[: -fields_of(sample)["logprobs_bytes"]]
        with pytest.raises(RecordError, match="logprobs are malformed"):
            decode_record(forge(fields, text + packed), R1_PROMPT, None, part)


def body_of_prompt_record(data: bytes) -> bytes:
    return data[22:-4]


def forge_prompt_record(flags: int = 0, offset: int = 62, tag: int | None = None, body: bytes = b"",
                        version: int = 1, key: str = "pk") -> bytes:  # fmt: skip
    fixed = struct.pack("<4sBBIqI", PROMPT_MAGIC, version, flags, key_tag(key) if tag is None else tag, offset,
                        len(body))  # fmt: skip
    return fixed + body + zlib.crc32(fixed + body).to_bytes(4, "little")


class TestPromptRecord:
    def test_round_trip(self) -> None:
        part, _ = shared_fixture_sample()
        data = encode_prompt_record(part, "pk")
        assert data[:5] == PROMPT_MAGIC + b"\x01"
        back = decode_prompt_record(data, R1_PROMPT, "pk")
        assert back == part and back.generation_offset == 62 and back.logprobs.tokens == part.logprobs.tokens
        assert len(data) == 26 + len(part.logprobs.packed())

    def test_the_layout_is_the_documented_one(self) -> None:
        part, _ = shared_fixture_sample()
        data = encode_prompt_record(part, "pk")
        assert forge_prompt_record(body=body_of_prompt_record(data)) == data

    def test_every_flipped_byte_is_detected(self) -> None:
        part, _ = shared_fixture_sample()
        data = encode_prompt_record(part, "pk")
        for i in range(len(data)):
            damaged = bytearray(data)
            damaged[i] ^= 0x04
            with pytest.raises(RecordError):
                decode_prompt_record(bytes(damaged), R1_PROMPT, "pk")

    def test_every_truncation_is_detected(self) -> None:
        part, _ = shared_fixture_sample()
        data = encode_prompt_record(part, "pk")
        for end in range(len(data)):
            with pytest.raises(RecordError):
                decode_prompt_record(data[:end], R1_PROMPT, "pk")

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            (lambda body: forge_prompt_record(body=body, key="other"), "another key"),
            (lambda body: forge_prompt_record(body=body, flags=1), "unknown flags"),
            (lambda body: forge_prompt_record(body=body, version=2), "version 2"),
            (lambda body: forge_prompt_record(body=body, offset=-1), "echoed prompt positions"),
            (lambda body: forge_prompt_record(body=body + b"x"), "logprobs are malformed"),
            (lambda body: forge_prompt_record(body=b"\x00" * 40), "logprobs are malformed"),
        ],
        ids=["other key", "flags", "version", "negative offset", "bad length", "not packed"],
    )
    def test_malformed(self, data: Any, message: str) -> None:
        part, _ = shared_fixture_sample()
        body = body_of_prompt_record(encode_prompt_record(part, "pk"))
        with pytest.raises(RecordError, match=message):
            decode_prompt_record(data(body), R1_PROMPT, "pk")

    def test_positions_that_are_not_an_echoed_prompt_are_refused(self) -> None:
        whole = fixture_sample()
        assert whole.logprobs is not None
        for lp in (whole.logprobs, whole.logprobs.get_generation_logprobs()):
            with pytest.raises(RecordError, match="echoed prompt positions"):
                decode_prompt_record(forge_prompt_record(body=lp.packed()), R1_PROMPT, "pk")

    def test_another_prompt_length_is_refused(self) -> None:
        part, _ = shared_fixture_sample()
        with pytest.raises(RecordError, match="prompt of 62 characters, not 5"):
            decode_prompt_record(encode_prompt_record(part, "pk"), "other", "pk")

    def test_sample_and_prompt_records_are_not_mistaken_for_each_other(self) -> None:
        part, sample = shared_fixture_sample()
        with pytest.raises(RecordError, match="not a fw_rollouts cache record"):
            decode_record(encode_prompt_record(part, "k"), R1_PROMPT, "k")
        with pytest.raises(RecordError, match="not a fw_rollouts prompt record"):
            decode_prompt_record(encode_record(sample, "k"), R1_PROMPT, "k")
        with pytest.raises(RecordError, match="bytes, not"):
            decode_prompt_record("text", R1_PROMPT, "k")  # type: ignore[arg-type]
