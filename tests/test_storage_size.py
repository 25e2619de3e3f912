"""Storage (issue 9): packed format 2 and record format 3 read back bit for bit, older records still read, and
a real cache directory stays under 48 bytes per generated token with top-5 alternatives. The alternatives' token
ids (issue 10) are an optional extension of format 2: forms with them round-trip, records without them (written
by the release before) read exactly."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest

from _helpers import R1_PROMPT, MakeClient, load_json_fixture
from _shapes import SHAPES, model_like, sample
from fw_rollouts import FwRollouts
from fw_rollouts._logprobs import Logprobs
from fw_rollouts._packing import _PREFIX, pack, read_header
from fw_rollouts._parsing import ResponseSpec, parse_completion
from fw_rollouts._record import decode_record, encode_record
from fw_rollouts._templates import split_think

RECORDS = Path(__file__).parent / "data" / "records"


def _bits(value: float | None) -> bytes | None:
    return None if value is None else struct.pack("<d", value)


def exact(lp: Logprobs) -> tuple[Any, ...]:
    """Everything a Logprobs presents, floats as their bit patterns and alternatives in order."""
    tops = [None if d is None else [(k, _bits(v)) for k, v in d.items()] for d in lp.top_logprobs]
    sampling = lp.sampling_logprobs
    return (
        lp.tokens,
        [_bits(v) for v in lp.token_logprobs],
        tops,
        lp.text_offset,
        lp.token_ids,
        None if sampling is None else [_bits(v) for v in sampling],
        (lp.num_prompt_tokens, lp.prompt_length, lp.echo, lp.top_k, len(lp)),
        None if lp.top_token_ids is None else [None if d is None else list(d.items()) for d in lp.top_token_ids],
    )


def reseal(data: bytes) -> bytes:
    return data[:6] + struct.pack("<I", zlib.crc32(data[_PREFIX.size :])) + data[_PREFIX.size :]


@pytest.mark.parametrize("name", list(SHAPES))
class TestExact:
    def test_packed_round_trip(self, name: str) -> None:
        lp = SHAPES[name]()
        data = lp.packed()
        assert data[4] == 2
        back = Logprobs.from_packed(data)
        assert exact(back) == exact(lp)
        assert back.packed() == data
        for part in (lp.get_prompt_logprobs(), lp.get_generation_logprobs()):
            assert exact(Logprobs.from_packed(part.packed())) == exact(part)

    def test_record_round_trip(self, name: str) -> None:
        lp = SHAPES[name]()
        for content_is_full in (True, False):
            original = sample(lp, content_is_full=content_is_full)
            back = decode_record(encode_record(original, "k"), original.prompt, "k")
            assert back.logprobs is not None and exact(back.logprobs) == exact(lp)
            assert dataclasses.replace(back, logprobs=None) == dataclasses.replace(original, logprobs=None, cached=True)

    def test_both_versions_hold_the_same_columns(self, name: str) -> None:
        lp = SHAPES[name]()
        one = pack(lp._cols, num_prompt_tokens=lp.num_prompt_tokens, prompt_length=lp.prompt_length, echo=lp.echo,
                   version=1)  # fmt: skip
        assert exact(Logprobs.from_packed(one)) == exact(Logprobs.from_packed(lp.packed())) == exact(lp)


@pytest.mark.parametrize("path", sorted(RECORDS.glob("v2-*.rec")), ids=lambda p: p.stem)
def test_records_of_the_previous_format_read_exactly(path: Path) -> None:
    data = path.read_bytes()
    assert data[:5] == b"FWRC\x02"
    stem = path.stem.removeprefix("v2-")
    reasoning = stem.endswith("-reasoning")
    name = stem.removesuffix("-reasoning").replace("_", " ")
    if name == "no logprobs":
        expected, key = sample(None), "key no logprobs"
    else:
        expected, key = sample(SHAPES[name](), content_is_full=not reasoning), f"key {name} {not reasoning}"
    back = decode_record(data, expected.prompt, key)
    if expected.logprobs is not None:
        assert back.logprobs is not None and back.logprobs.packed()[4] == 1  # the old form, read as it is
        assert exact(back.logprobs) == exact(expected.logprobs)
    assert dataclasses.replace(back, logprobs=None) == dataclasses.replace(expected, logprobs=None, cached=True)


def test_the_old_records_cover_every_shape() -> None:
    names = {p.stem.removeprefix("v2-").removesuffix("-reasoning").replace("_", " ") for p in RECORDS.glob("v2-*.rec")}
    assert names == {*SHAPES, "no logprobs"}


def assert_truncations_refused(forms: list[bytes]) -> None:
    """Every proper prefix of each packed form is refused as not packed logprobs."""
    for data in forms:
        for end in range(len(data)):
            with pytest.raises(ValueError, match="not packed logprobs"):
                Logprobs.from_packed(data[:end])


def assert_flips_raise_only_value_error(forms: list[bytes], *, seed: int) -> None:
    """A flipped byte (resealed every other trial) is a ValueError or, resealed, a form that reads whole."""
    rng = random.Random(seed)
    for trial in range(600):
        data = bytearray(rng.choice(forms))
        data[rng.randrange(len(data))] ^= rng.randint(1, 255)
        candidate = reseal(bytes(data)) if trial % 2 else bytes(data)
        try:
            lp = Logprobs.from_packed(candidate)
            lp.to_dict(), lp.sampling_logprobs, lp.top_token_ids, list(lp), lp.packed()
        except ValueError:
            pass
        else:
            assert trial % 2, "a flipped byte passed the checksum"


class TestMalformed:
    def forms(self) -> list[bytes]:
        return [SHAPES[name]().packed() for name in ("model-like echo", "ragged and empty", "ids over int32")]

    def test_every_truncation_is_refused(self) -> None:
        assert_truncations_refused(self.forms())

    def test_flipped_bytes_raise_nothing_but_value_error(self) -> None:
        assert_flips_raise_only_value_error(self.forms(), seed=9)

    @pytest.mark.parametrize("delta", [-1, 1, 1000])
    def test_a_plain_size_that_is_not_the_inflated_size(self, delta: int) -> None:
        data = SHAPES["model-like 32"]().packed()
        envelope = read_header(data)
        head = data[_PREFIX.size : envelope.start]  # type: ignore[union-attr]
        stored, plain = envelope.stored, envelope.plain  # type: ignore[union-attr]

        def varint(value: int) -> bytes:
            out = bytearray()
            while value > 0x7F:
                out.append(value & 0x7F | 0x80)
                value >>= 7
            return bytes([*out, value])

        # The head: flags, two attributes (one byte each here), stored, plain, raw.
        assert head[3:].startswith(varint(stored) + varint(plain))
        new_head = head[:3] + varint(stored) + varint(plain + delta) + head[3 + len(varint(stored) + varint(plain)) :]
        forged = reseal(data[: _PREFIX.size] + new_head + data[envelope.start :])  # type: ignore[union-attr]
        with pytest.raises(ValueError, match="inflate"):
            _ = Logprobs.from_packed(forged).tokens


@pytest.mark.parametrize("path", sorted(RECORDS.glob("v3-*.rec")), ids=lambda p: p.stem)
def test_records_written_before_alternative_ids_were_kept_read_exactly(path: Path) -> None:
    data = path.read_bytes()
    assert data[:5] == b"FWRC\x03"
    name = path.stem.removeprefix("v3-").replace("_", " ")
    if name == "content-echo":
        # Today's parse of the same reply keeps the alternatives' ids, which the record was written without.
        body = load_json_fixture("fireworks/completion-content-logprobs-echo.json")
        spec = ResponseSpec(prompt=R1_PROMPT, echo=True, logprobs=True, split_reasoning=split_think)
        expected, key = parse_completion(body, spec, [0])[0], "key content echo"
        assert expected.logprobs is not None and expected.logprobs.top_token_ids is not None
        lp = expected.logprobs
        expected.logprobs = Logprobs(lp.tokens, lp.token_logprobs, lp.top_logprobs, lp.text_offset, lp.token_ids,
                                     sampling_logprobs=lp.sampling_logprobs, num_prompt_tokens=lp.num_prompt_tokens,
                                     prompt_length=lp.prompt_length, echo=lp.echo)  # fmt: skip
    else:
        expected, key = sample(SHAPES[name]()), f"key {name} True"
    back = decode_record(data, expected.prompt, key)
    assert back.logprobs is not None and expected.logprobs is not None
    assert back.logprobs.top_token_ids is None
    assert exact(back.logprobs) == exact(expected.logprobs)
    assert dataclasses.replace(back, logprobs=None) == dataclasses.replace(expected, logprobs=None, cached=True)
    assert read_header(back.logprobs.packed()).top_ids is False  # type: ignore[union-attr]


def test_the_records_of_the_release_before_cover_every_shape() -> None:
    names = {p.stem.removeprefix("v3-").replace("_", " ") for p in RECORDS.glob("v3-*.rec")}
    assert names == {*SHAPES, "content-echo"}


def _crc_id(token: str, position: int) -> int:
    return zlib.crc32(token.encode("utf-8", "surrogatepass")) % 150_000  # model_like's token ids


def with_alternative_ids(lp: Logprobs, id_of: Any = _crc_id) -> Logprobs:
    """``lp`` with an id for every alternative: ``id_of(token, position)``."""
    top = lp.top_logprobs
    ids = [None if d is None else {t: id_of(t, i) for t in d} for i, d in enumerate(top)]
    return Logprobs(lp.tokens, lp.token_logprobs, top, lp.text_offset, lp.token_ids,
                    sampling_logprobs=lp.sampling_logprobs, top_token_ids=ids, num_prompt_tokens=lp.num_prompt_tokens,
                    prompt_length=lp.prompt_length, echo=lp.echo)  # fmt: skip


ALTERNATIVE_IDS: dict[str, Any] = {
    # One tokenizer: one id table for both columns (the chosen ids read from it).
    "model-like 32": lambda: with_alternative_ids(model_like(32, seed=1)),
    "model-like echo": lambda: with_alternative_ids(model_like(30, seed=5, echo=4, sampling=True)),
    "without chosen ids": lambda: with_alternative_ids(model_like(40, seed=3, ids=False)),
    # Not one function of the string: every alternative's id stored.
    "ids by position": lambda: with_alternative_ids(model_like(20, seed=7), lambda t, i: 1000 * i + len(t)),
    "chosen ids disagree": lambda: with_alternative_ids(
        Logprobs(["a", "b"], [-1.0, -2.0], [{"a": -1.0, "x": -2.0}, {"b": -2.0}], None, [5, 6]), lambda t, i: 9
    ),
    "over int32": lambda: with_alternative_ids(model_like(10, seed=8), lambda t, i: 2**40 + i),
    "over int32, one tokenizer": lambda: with_alternative_ids(
        model_like(10, seed=9, ids=False), lambda t, i: 2**40 + _crc_id(t, i)
    ),
    "ragged and empty": lambda: with_alternative_ids(SHAPES["ragged and empty"]()),
    "missing top": lambda: with_alternative_ids(SHAPES["missing top"]()),
    "chosen outside the alternatives, no chosen ids": lambda: Logprobs(
        ["q", "r"], [-1.0, -2.0], [{"a": -0.5}, {"r": -2.0}], top_token_ids=[{"a": 1}, {"r": 2}]
    ),
}


@pytest.mark.parametrize("name", list(ALTERNATIVE_IDS))
def test_alternative_ids_round_trip_exactly(name: str) -> None:
    lp = ALTERNATIVE_IDS[name]()
    assert lp.top_token_ids is not None
    data = lp.packed()
    assert read_header(data).top_ids is True  # type: ignore[union-attr]
    back = Logprobs.from_packed(data)
    assert exact(back) == exact(lp) and back == lp
    assert back.packed() == data
    record = decode_record(encode_record(sample(lp), "k"), "Once upon a time", "k")
    assert record.logprobs is not None and exact(record.logprobs) == exact(lp)
    for part in (lp.get_prompt_logprobs(), lp.get_generation_logprobs()):
        assert exact(Logprobs.from_packed(part.packed())) == exact(part)
    with pytest.raises(ValueError, match="format 1"):
        pack(lp._cols, num_prompt_tokens=0, prompt_length=0, echo=False, version=1)


def test_one_tokenizer_stores_one_id_per_distinct_token() -> None:
    lp = model_like(256, seed=2)
    with_ids = with_alternative_ids(lp)
    by_position = with_alternative_ids(lp, lambda t, i: 150_000 + 7 * i + len(t))
    distinct = len(set(lp.tokens) | {t for d in lp.top_logprobs for t in d or ()})
    assert len(with_ids.packed()) - len(lp.packed()) < 4 * distinct  # the chosen ids' table became both columns'
    assert len(by_position.packed()) > len(with_ids.packed()) + 2 * 256


def test_forms_with_alternative_ids_refuse_damage_with_value_error_only() -> None:
    forms = [ALTERNATIVE_IDS[name]().packed() for name in ("model-like echo", "ids by position", "ragged and empty")]
    assert_truncations_refused(forms)
    assert_flips_raise_only_value_error(forms, seed=10)


def test_alternative_ids_must_name_the_alternatives() -> None:
    with pytest.raises(ValueError, match=r"top_token_ids\[0\]"):
        Logprobs(["a"], [-1.0], [{"a": -1.0, "b": -2.0}], top_token_ids=[{"b": 1, "a": 2}])
    with pytest.raises(ValueError, match="needs top_logprobs"):
        Logprobs(["a"], [-1.0], None, top_token_ids=[{"a": 1}])
    with pytest.raises(TypeError):
        Logprobs(["a"], [-1.0], [{"a": -1.0}], top_token_ids=[{"a": 1.0}])  # type: ignore[dict-item]


class TestSize:
    def test_packed_form_is_a_fraction_of_version_1(self) -> None:
        lp = model_like(256, seed=11, sampling=True)
        one = pack(lp._cols, num_prompt_tokens=0, prompt_length=0, echo=False, version=1)
        assert len(lp.packed()) < 0.7 * len(one)

    def test_content_is_stored_once(self) -> None:
        lp = model_like(64, seed=12)
        once = encode_record(sample(lp))
        twice = encode_record(dataclasses.replace(sample(lp), content=sample(lp).full + " "))
        assert len(twice) - len(once) > len(sample(lp).full)


def _dir_bytes(path: Path) -> int:
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


@pytest.mark.parametrize(("max_tokens", "n"), [(256, 60), (1000, 12)])
def test_bytes_per_generated_token_on_a_real_cache_directory(
    make_client: MakeClient, tmp_path: Path, max_tokens: int, n: int
) -> None:
    """The performance target of issue 9, on a directory written by ``generate`` and closed (index and database in)."""

    async def main() -> FwRollouts:
        async with make_client() as client:
            return await client.generate(
                "Once upon a time", n, seed=0, raw=True, max_tokens=max_tokens, ignore_eos=True, logprobs=5, echo=False
            )

    rollouts = asyncio.run(main())
    assert sum(len(r.logprobs or ()) for r in rollouts) == n * max_tokens
    assert all(r.logprobs is not None and r.logprobs.top_k >= 5 for r in rollouts)
    per_token = _dir_bytes(tmp_path / "cache") / (n * max_tokens)
    assert per_token <= 48, f"{per_token:.1f} bytes on disk per generated token"
