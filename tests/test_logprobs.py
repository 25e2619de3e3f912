"""The columnar logprobs store: lossless round trips, slicing, views, pickling, size and interning."""

from __future__ import annotations

import copy
import math
import pickle
import random
import threading
import uuid
from array import array

import pytest

from fw_rollouts import Logprobs, TokenLogprob
from fw_rollouts._logprobs import _intern, _strings

FLOAT32_EXACT = [-0.5, -1.25, -3.0, -0.0078125, 0.0, -17.75]
DECIMALS = [-0.21, -1.3012000000000001, -2.0012, -0.9500000000000001, -23.285741806030273, -1e-9]


def make(
    tokens: list[str],
    logprobs: list[float | None] | None = None,
    **kwargs: object,
) -> Logprobs:
    values = logprobs if logprobs is not None else [-1.0] * len(tokens)
    return Logprobs(tokens, values, **kwargs)  # type: ignore[arg-type]


class TestRoundTrip:
    @pytest.mark.parametrize("values", [FLOAT32_EXACT, DECIMALS, FLOAT32_EXACT + DECIMALS], ids=["f32", "dec", "mix"])
    def test_token_logprobs_are_returned_exactly(self, values: list[float]) -> None:
        tokens = [f"t{i}" for i in range(len(values))]
        lp = Logprobs(tokens, values)
        assert lp.token_logprobs == values
        assert all(type(v) is float for v in lp.token_logprobs)

    def test_float64_fallback_keeps_the_exact_decimal(self) -> None:
        lp = Logprobs(["a", "b"], [-0.5, -1.3012000000000001], [{"a": -0.5}, {"b": -1.3012000000000001, "c": -2.0}])
        assert lp.token_logprobs[1] == -1.3012000000000001
        top = lp.top_logprobs[1]
        assert top is not None and top["b"] == -1.3012000000000001
        assert repr(lp.token_logprobs[1]) == "-1.3012000000000001"

    @pytest.mark.parametrize("values", [FLOAT32_EXACT, DECIMALS], ids=["f32", "dec"])
    def test_every_column_round_trips(self, values: list[float]) -> None:
        n = len(values)
        tokens = [f"tok{i}" for i in range(n)]
        top: list[dict[str, float] | None] = [{tokens[i]: values[i], "alt": values[(i + 1) % n]} for i in range(n)]
        offsets = [3 * i for i in range(n)]  # not derivable from the token lengths: stored as sent
        ids = [1000 + i for i in range(n)]
        sampling = [v - 0.5 for v in values]
        lp = Logprobs(tokens, values, top, offsets, ids, sampling_logprobs=sampling)
        assert lp.tokens == tokens
        assert lp.token_logprobs == values
        assert lp.top_logprobs == top
        assert lp.text_offset == offsets
        assert lp.token_ids == ids
        assert lp.sampling_logprobs == sampling

    def test_none_positions(self) -> None:
        values: list[float | None] = [None, -1.0, None, -2.5, -0.21]
        lp = make(["a", "b", "c", "d", "e"], values, sampling_logprobs=[None, -1.0, -2.0, None, -0.21])
        assert lp.token_logprobs == values
        assert lp.sampling_logprobs == [None, -1.0, -2.0, None, -0.21]

    def test_all_none_sampling_logprobs_are_dropped(self) -> None:
        assert make(["a"], sampling_logprobs=[None]).sampling_logprobs is None

    def test_ragged_top_k(self) -> None:
        top: list[dict[str, float] | None] = [
            {"a": -1.0},
            None,
            {"a": -1.0, "b": -2.0, "c": -3.21},
            {},
            {"x": -0.5, "y": -0.75},
        ]
        lp = make(["a", "b", "c", "d", "e"], top_logprobs=top)
        assert lp.top_logprobs == top
        assert lp.top_k == 3

    def test_uniform_top_k_with_none(self) -> None:
        top: list[dict[str, float] | None] = [None, {"a": -1.0, "b": -2.0}, {"c": -1.5, "a": -0.25}]
        lp = make(["a", "b", "c"], top_logprobs=top)
        assert lp.top_logprobs == top
        assert lp.top_k == 2

    def test_alternatives_keep_their_order(self) -> None:
        top: list[dict[str, float] | None] = [{"z": -3.0, "a": -1.0, "m": -2.0}]
        got = make(["z"], top_logprobs=top).top_logprobs[0]
        assert got is not None and list(got) == ["z", "a", "m"]

    def test_no_top_logprobs_gives_none_per_position(self) -> None:
        lp = make(["a", "b"])
        assert lp.top_logprobs == [None, None]
        assert lp.top_k == 0

    def test_derived_text_offsets(self) -> None:
        lp = make(["Hel", "lo", " world"], text_offset=[5, 8, 10])
        assert lp.text_offset == [5, 8, 10]
        assert make(["Hel", "lo"]).text_offset == [0, 3]

    def test_large_and_negative_token_ids_are_exact(self) -> None:
        ids = [0, 2**31 - 1, 2**40, -1]
        assert make(["a", "b", "c", "d"], token_ids=ids).token_ids == ids

    def test_empty(self) -> None:
        lp = Logprobs()
        assert len(lp) == 0
        assert lp.tokens == [] and lp.token_logprobs == [] and lp.top_logprobs == [] and lp.text_offset == []
        assert lp.token_ids is None and lp.sampling_logprobs is None
        assert lp.sum() == 0.0
        assert math.isnan(lp.mean())
        assert list(lp) == []
        assert len(lp.get_prompt_logprobs()) == 0 and len(lp.get_generation_logprobs()) == 0
        assert lp.top_k == 0
        assert lp == Logprobs()
        assert pickle.loads(pickle.dumps(lp)) == lp

    @pytest.mark.parametrize(
        ("kwargs", "column"),
        [
            ({"token_logprobs": [-1.0]}, "token_logprobs"),
            ({"top_logprobs": [None]}, "top_logprobs"),
            ({"token_ids": [1]}, "token_ids"),
            ({"sampling_logprobs": [-1.0]}, "sampling_logprobs"),
        ],
    )
    def test_column_length_mismatch_raises(self, kwargs: dict[str, object], column: str) -> None:
        base: dict[str, object] = {"tokens": ["a", "b"], "token_logprobs": [-1.0, -2.0]}
        with pytest.raises(ValueError, match=f"{column} has 1 entries for 2 tokens"):
            Logprobs(**{**base, **kwargs})  # type: ignore[arg-type]


def sliceable() -> Logprobs:
    """Three prompt positions then four generated, with every column and irregular offsets."""
    return Logprobs(
        ["<s>", "Hi", " there", " A", "B", " C", "!"],
        [None, -1.0, -2.0, -0.5, None, -0.25, -0.21],
        [None, {"Hi": -1.0, "Yo": -2.0}, {" there": -2.0, "x": -3.0}, {" A": -0.5, "q": -4.0}, None,
         {" C": -0.25, "r": -2.5}, {"!": -0.21, "?": -1.7}],
        [0, 0, 2, 8, 10, 11, 13],
        [1, 10, 11, 12, 13, 14, 15],
        sampling_logprobs=[None, -1.1, -2.1, None, -0.6, -0.3, -0.2],
        num_prompt_tokens=3,
        prompt_length=8,
        echo=True,
    )


class TestSlicing:
    def test_prompt_slice(self) -> None:
        prompt = sliceable().get_prompt_logprobs()
        assert prompt.tokens == ["<s>", "Hi", " there"]
        assert prompt.token_logprobs == [None, -1.0, -2.0]
        assert prompt.top_logprobs == [None, {"Hi": -1.0, "Yo": -2.0}, {" there": -2.0, "x": -3.0}]
        assert prompt.text_offset == [0, 0, 2]
        assert prompt.token_ids == [1, 10, 11]
        assert prompt.sampling_logprobs == [None, -1.1, -2.1]
        assert (prompt.num_prompt_tokens, prompt.prompt_length, prompt.echo) == (3, 8, True)

    def test_generation_slice_shifts_none_positions(self) -> None:
        generation = sliceable().get_generation_logprobs()
        assert generation.tokens == [" A", "B", " C", "!"]
        assert generation.token_logprobs == [-0.5, None, -0.25, -0.21]
        assert generation.top_logprobs == [
            {" A": -0.5, "q": -4.0},
            None,
            {" C": -0.25, "r": -2.5},
            {"!": -0.21, "?": -1.7},
        ]
        assert generation.text_offset == [8, 10, 11, 13]
        assert generation.token_ids == [12, 13, 14, 15]
        assert generation.sampling_logprobs == [None, -0.6, -0.3, -0.2]
        assert (generation.num_prompt_tokens, generation.prompt_length, generation.echo) == (0, 0, False)
        assert generation.get_generation_logprobs() == generation
        assert len(generation.get_prompt_logprobs()) == 0

    def test_slices_of_compact_offsets(self) -> None:
        tokens = ["Hel", "lo", " wor", "ld", "!", " Bye"]
        lp = Logprobs(tokens, [None, -1.0, -2.0, -3.0, -0.5, -0.75], text_offset=[4, 7, 9, 13, 15, 16],
                      num_prompt_tokens=4, prompt_length=11, echo=True)
        assert lp.text_offset == [4, 7, 9, 13, 15, 16]
        assert lp.get_prompt_logprobs().text_offset == [4, 7, 9, 13]
        generation = lp.get_generation_logprobs()
        assert generation.text_offset == [15, 16]
        assert generation.tokens == ["!", " Bye"]
        # Pickling a slice keeps its derived offsets.
        assert pickle.loads(pickle.dumps(generation)).text_offset == [15, 16]

    def test_ragged_top_slices(self) -> None:
        top: list[dict[str, float] | None] = [None, {"a": -1.0}, {"b": -1.0, "c": -2.0, "d": -3.0}, None, {"e": -0.5}]
        lp = Logprobs(["x", "a", "b", "y", "e"], [None, -1.0, -1.0, -2.0, -0.5], top, num_prompt_tokens=2, echo=True)
        assert lp.get_prompt_logprobs().top_logprobs == top[:2]
        assert lp.get_generation_logprobs().top_logprobs == top[2:]
        assert lp.get_generation_logprobs().top_k == 3

    def test_uniform_top_with_none_slices(self) -> None:
        top: list[dict[str, float] | None] = [None, {"a": -1.0, "b": -2.0}, None, {"c": -1.0, "d": -2.0}]
        lp = Logprobs(["x", "a", "y", "c"], [None, -1.0, -2.0, -1.0], top, num_prompt_tokens=3, echo=True)
        assert lp.get_prompt_logprobs().top_logprobs == top[:3]
        assert lp.get_generation_logprobs().top_logprobs == [{"c": -1.0, "d": -2.0}]

    def test_no_echo_prompt_slice_is_empty(self) -> None:
        lp = make(["a", "b"], token_ids=[1, 2])
        assert len(lp.get_prompt_logprobs()) == 0
        assert lp.get_prompt_logprobs().token_ids == []
        assert lp.get_generation_logprobs() == lp

    def test_sum_of_slices_adds_up(self) -> None:
        lp = sliceable()
        total = lp.get_prompt_logprobs().sum() + lp.get_generation_logprobs().sum()
        assert total == pytest.approx(lp.sum())
        assert lp.get_generation_logprobs().sum() == pytest.approx(-0.5 - 0.25 - 0.21)


class TestViews:
    def test_dict_style_access(self) -> None:
        lp = sliceable()
        assert lp["tokens"] == lp.tokens
        assert lp["token_logprobs"] == [None, -1.0, -2.0, -0.5, None, -0.25, -0.21]
        assert lp["text_offset"] == [0, 0, 2, 8, 10, 11, 13]
        with pytest.raises(KeyError):
            lp["num_prompt_tokens"]
        with pytest.raises(KeyError):
            lp["bogus"]

    def test_dict_of_logprobs(self) -> None:
        lp = sliceable()
        as_dict = dict(lp)
        assert list(as_dict) == ["tokens", "token_logprobs", "top_logprobs", "text_offset", "token_ids"]
        assert as_dict["tokens"] == ["<s>", "Hi", " there", " A", "B", " C", "!"]
        assert as_dict["token_ids"] == [1, 10, 11, 12, 13, 14, 15]
        assert {k: v for k, v in lp.to_dict().items() if k in as_dict} == as_dict
        assert lp.to_dict()["num_prompt_tokens"] == 3 and lp.to_dict()["echo"] is True

    def test_iteration_yields_token_logprobs(self) -> None:
        rows = list(sliceable())
        assert len(rows) == 7
        assert all(isinstance(r, TokenLogprob) for r in rows)
        assert rows[0] == TokenLogprob("<s>", None, None, 0, 1)
        assert rows[3] == TokenLogprob(" A", -0.5, {" A": -0.5, "q": -4.0}, 8, 12)
        assert rows[3].token == " A" and rows[3].logprob == -0.5 and rows[3].token_id == 12

    def test_iteration_without_ids(self) -> None:
        rows = list(make(["a", "bc"], [-1.0, -2.0]))
        assert rows == [TokenLogprob("a", -1.0, None, 0, None), TokenLogprob("bc", -2.0, None, 1, None)]

    def test_sum_and_mean_skip_none(self) -> None:
        lp = make(["a", "b", "c", "d"], [None, -1.0, None, -2.0])
        assert lp.sum() == -3.0
        assert lp.mean() == -1.5
        assert math.isnan(make(["a"], [None]).mean())
        assert make(["a"], [None]).sum() == 0.0

    def test_sum_of_decimals(self) -> None:
        lp = make(["a", "b", "c"], [-0.21, -0.05, -0.33])
        assert lp.sum() == pytest.approx(-0.59)
        assert lp.mean() == pytest.approx(-0.59 / 3)

    def test_equality(self) -> None:
        assert sliceable() == sliceable()
        other = sliceable()
        assert other != make(["a"])
        assert Logprobs(["a"], [-1.0], sampling_logprobs=[-1.0]) != Logprobs(["a"], [-1.0], sampling_logprobs=[-2.0])
        assert (sliceable() == "x") is False
        with pytest.raises(TypeError):
            hash(sliceable())

    def test_repr(self) -> None:
        assert repr(sliceable()) == "Logprobs(tokens=7, prompt_tokens=3, top_k=2, echo=True)"


class TestPickle:
    @pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
    def test_round_trip(self, protocol: int) -> None:
        lp = sliceable()
        restored = pickle.loads(pickle.dumps(lp, protocol=protocol))
        assert restored == lp
        assert restored.to_dict() == lp.to_dict()
        assert restored.sampling_logprobs == lp.sampling_logprobs
        assert restored.get_generation_logprobs() == lp.get_generation_logprobs()
        assert (restored.num_prompt_tokens, restored.prompt_length, restored.echo) == (3, 8, True)

    def test_round_trip_of_float64_and_ragged_data(self) -> None:
        top: list[dict[str, float] | None] = [{"a": -1.3012000000000001}, None, {"b": -0.21, "c": -2.0}]
        lp = Logprobs(["a", "b", "c"], [None, -0.21, -2.0012], top, token_ids=[2**40, 1, 2])
        restored = pickle.loads(pickle.dumps(lp))
        assert restored.token_logprobs == [None, -0.21, -2.0012]
        assert restored.top_logprobs == top
        assert restored.token_ids == [2**40, 1, 2]

    def test_deepcopy(self) -> None:
        assert copy.deepcopy(sliceable()) == sliceable()

    def test_state_of_the_first_cache_format_still_loads(self) -> None:
        # Entries cached before int columns were narrowed stored token ids and offsets as bare int64 bytes.
        lp = sliceable()
        state = lp.__getstate__()
        state["ids"] = array("q", [1, 10, 11, 12, 13, 14, 15]).tobytes()
        state["off"] = array("q", [0, 0, 2, 8, 10, 11, 13]).tobytes()
        restored = Logprobs.__new__(Logprobs)
        restored.__setstate__(state)
        assert restored == lp


class TestSize:
    def test_nbytes_under_64_bytes_per_token(self) -> None:
        """Product target: 1000 tokens x 6 alternatives of float32-exact data cost < 64 bytes per token."""
        rng = random.Random(1234)
        vocab = [f"w{i}" for i in range(2000)]
        n = 1000
        tokens = [rng.choice(vocab) for _ in range(n)]
        values = [-rng.randint(0, 4096) / 256 for _ in range(n)]  # multiples of 2**-8: float32-exact
        top: list[dict[str, float] | None] = []
        for token, value in zip(tokens, values, strict=True):
            alternatives = {token: value}
            while len(alternatives) < 6:
                alternatives[rng.choice(vocab)] = -rng.randint(0, 4096) / 64
            top.append(alternatives)
        offsets = []
        pos = 0
        for token in tokens:
            offsets.append(pos)
            pos += len(token)
        ids = [rng.randint(0, 200_000) for _ in range(n)]
        lp = Logprobs(tokens, values, top, offsets, ids)
        assert lp.token_logprobs == values and lp.top_logprobs == top and lp.token_ids == ids
        per_token = lp.nbytes() / n
        assert per_token < 64, f"nbytes() is {per_token:.1f} bytes per token"

    def test_nbytes_grows_with_the_data(self) -> None:
        small = make(["a"] * 10, top_logprobs=[{"a": -1.0}] * 10)
        large = make(["a"] * 1000, top_logprobs=[{"a": -1.0}] * 1000)
        assert large.nbytes() > small.nbytes() > 0


class TestInterning:
    def test_intern_maps_back_to_the_strings(self) -> None:
        tokens = ["x", "y", "x", "", " ", "é", "🤔"]
        indices = _intern(tokens)
        assert _strings(indices) == tokens
        assert indices[0] == indices[2]

    def test_intern_is_thread_safe(self) -> None:
        prefix = uuid.uuid4().hex  # tokens new to the shared vocabulary
        words = [f"{prefix}-{i}" for i in range(400)]
        threads = 8
        barrier = threading.Barrier(threads)
        results: list[tuple[list[str], array[int]]] = []
        errors: list[BaseException] = []
        lock = threading.Lock()

        def work(seed: int) -> None:
            rng = random.Random(seed)
            try:
                barrier.wait()
                for _ in range(25):
                    batch = rng.sample(words, 60)  # overlapping new tokens across threads
                    indices = _intern(batch)
                    with lock:
                        results.append((batch, indices))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        pool = [threading.Thread(target=work, args=(seed,)) for seed in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        assert not errors
        assert len(results) == threads * 25
        index_of: dict[str, int] = {}
        for batch, indices in results:
            assert _strings(indices) == batch
            for token, index in zip(batch, indices, strict=True):
                assert index_of.setdefault(token, index) == index  # one index per token, whichever thread won
        assert len(set(index_of.values())) == len(index_of)


def test_packed_logprobs_unpack_on_first_use_and_equal_the_original() -> None:
    original = Logprobs(
        ["<s>", "Hel", "lo", " wörld"],
        [None, -0.5, -1.25, -0.125],
        [None, {"Hel": -0.5, "Hi": -1.0}, {"lo": -1.25}, {" wörld": -0.125, " world": -2.0, "!": -3.0}],
        [0, 3, 6, 8],
        [1, 2, 3, 4],
        num_prompt_tokens=2,
        prompt_length=6,
        echo=True,
    )
    lazy = Logprobs.from_packed(original.packed())
    assert lazy._packed is not None  # nothing unpacked yet
    assert lazy == original and lazy._packed is None
    assert lazy.get_generation_logprobs().tokens == ["lo", " wörld"]
    assert Logprobs.from_packed(original.packed()).packed() == original.packed()  # not unpacked to re-pack
    assert pickle.loads(pickle.dumps(Logprobs.from_packed(original.packed()))) == original
    assert len(Logprobs.from_packed(original.packed())) == 4
    with pytest.raises(AttributeError):
        _ = lazy.no_such_attribute


def test_token_indices_widen_past_65536_distinct_tokens() -> None:
    fresh = [f"wide-{uuid.uuid4().hex}" for _ in range(70_000)]
    narrow = _intern(fresh[:10])
    wide = _intern(fresh)  # the vocabulary now holds over 65,536 strings: 4-byte indices
    assert wide.typecode == "I" and _strings(wide) == fresh
    assert _strings(narrow) == fresh[:10]
    lp = Logprobs(fresh[-3:], [-1.0, -2.0, -3.0], [{fresh[0]: -1.0}, {fresh[1]: -2.0}, {fresh[-1]: -3.0}])
    assert lp.tokens == fresh[-3:] and lp.top_logprobs[2] == {fresh[-1]: -3.0}
    assert Logprobs.from_packed(lp.packed()) == lp
