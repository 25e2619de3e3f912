"""Storage (issue 9): packed format 2 and record format 3 read back bit for bit, older records still read, and
a real cache directory stays under 48 bytes per generated token with top-5 alternatives."""

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

from _helpers import MakeClient
from _shapes import SHAPES, model_like, sample
from fw_rollouts import FwRollouts
from fw_rollouts._logprobs import Logprobs
from fw_rollouts._packing import _PREFIX, pack, read_header
from fw_rollouts._record import decode_record, encode_record

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


class TestMalformed:
    def forms(self) -> list[bytes]:
        return [SHAPES[name]().packed() for name in ("model-like echo", "ragged and empty", "ids over int32")]

    def test_every_truncation_is_refused(self) -> None:
        for data in self.forms():
            for end in range(len(data)):
                with pytest.raises(ValueError, match="not packed logprobs"):
                    Logprobs.from_packed(data[:end])

    def test_flipped_bytes_raise_nothing_but_value_error(self) -> None:
        rng = random.Random(9)
        forms = self.forms()
        for trial in range(600):
            data = bytearray(rng.choice(forms))
            data[rng.randrange(len(data))] ^= rng.randint(1, 255)
            candidate = reseal(bytes(data)) if trial % 2 else bytes(data)
            try:
                lp = Logprobs.from_packed(candidate)
                lp.to_dict(), lp.sampling_logprobs, list(lp), lp.packed()
            except ValueError:
                pass
            else:
                assert trial % 2, "a flipped byte passed the checksum"

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
