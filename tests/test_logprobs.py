"""The columnar logprobs store: lossless round trips, slicing, views, pickling, size and interning."""

from __future__ import annotations

import copy
import math
import pickle
import random
import struct
import threading
import uuid
import zlib
from array import array
from typing import Any

import pytest

from fw_rollouts import Logprobs, TokenLogprob
from fw_rollouts._columns import _intern, _strings
from fw_rollouts._packing import _FIELDS, _PREFIX, FORMAT_VERSION, MAGIC, Header, pack, read_header

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
        # "e" is not among its two, so nothing was added there: two were asked for, and "c" is a third, added.
        assert lp.top_k == 2

    def test_top_k_leaves_out_the_chosen_token_added_to_a_legacy_reply(self) -> None:
        # logprobs=3 in the legacy format: where the chosen token is not among the top 3 it comes as a fourth.
        tokens = ["A", "b", "c", "d"]
        top: list[dict[str, float] | None] = [
            None,  # the first echoed token: no context, no alternatives
            {"b": -0.1, "x": -2.5, "y": -3.0},
            {"p": -0.2, "q": -1.9, "r": -2.2, "c": -4.4},  # "c" added
            {"s": -0.3, "d": -1.2, "t": -2.6},
        ]
        lp = make(tokens, [None, -0.1, -4.4, -1.2], top_logprobs=top)
        assert [len(t or {}) for t in lp.top_logprobs] == [0, 3, 4, 3]
        assert lp.top_k == 3
        assert lp.get_generation_logprobs().top_k == 3 and make(tokens[:1]).top_k == 0
        assert lp.ranks() == [None, 0, None, 1]

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
        [
            None,
            {"Hi": -1.0, "Yo": -2.0},
            {" there": -2.0, "x": -3.0},
            {" A": -0.5, "q": -4.0},
            None,
            {" C": -0.25, "r": -2.5},
            {"!": -0.21, "?": -1.7},
        ],
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
        lp = Logprobs(
            tokens,
            [None, -1.0, -2.0, -3.0, -0.5, -0.75],
            text_offset=[4, 7, 9, 13, 15, 16],
            num_prompt_tokens=4,
            prompt_length=11,
            echo=True,
        )
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

    def test_pickled_state_is_the_packed_form(self) -> None:
        lp = sliceable()
        assert lp.__getstate__() == lp.packed()
        lazy = Logprobs.from_packed(lp.packed())
        assert pickle.loads(pickle.dumps(lazy)) == lp
        assert lazy._packed is not None  # pickling a lazy instance does not unpack it

    def test_state_of_older_versions_is_refused(self) -> None:
        # Older versions pickled a dict of columns; such state is no longer read.
        restored = Logprobs.__new__(Logprobs)
        with pytest.raises(ValueError, match="expected bytes, got dict"):
            restored.__setstate__({"tokens": ["a"], "lp": ("f", b"\0\0\0\0", ())})  # type: ignore[arg-type]


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


# -- views are built once ----------------------------------------------------------------------------------

VIEW_NAMES = ("tokens", "token_logprobs", "sampling_logprobs", "text_offset", "token_ids", "top_logprobs")


class TestViewsBuiltOnce:
    @pytest.mark.parametrize("name", VIEW_NAMES)
    def test_each_view_is_one_kept_list(self, name: str) -> None:
        lp = sliceable()
        view = getattr(lp, name)
        assert type(view) is list
        assert getattr(lp, name) is view  # the loop `lp.top_logprobs[i]` does not rebuild the list
        if name in lp.keys():  # noqa: SIM118 - keys() is the API under test
            assert lp[name] is view

    def test_views_of_a_lazily_unpacked_instance_are_kept(self) -> None:
        lazy = Logprobs.from_packed(sliceable().packed())
        assert lazy.top_logprobs is lazy.top_logprobs
        assert lazy.top_logprobs == sliceable().top_logprobs

    def test_views_are_built_only_when_read(self) -> None:
        lp = sliceable()
        size = lp.nbytes()
        assert lp._views is None
        assert lp.tokens == ["<s>", "Hi", " there", " A", "B", " C", "!"]
        assert set(lp._views or ()) == {"tokens"}
        assert lp.nbytes() == size  # nbytes reports the columns, not the views

    def test_iteration_equality_and_to_dict_keep_nothing(self) -> None:
        # One pass over many samples must not leave every sample holding Python lists.
        lp, other = sliceable(), sliceable()
        assert list(lp) and lp == other and lp.to_dict()
        assert lp._views is None and other._views is None

    def test_to_dict_returns_new_lists(self) -> None:
        lp = sliceable()
        as_dict = lp.to_dict()
        assert as_dict["top_logprobs"] == lp.top_logprobs and as_dict["top_logprobs"] is not lp.top_logprobs
        as_dict["tokens"].append("changed")
        assert lp.tokens == ["<s>", "Hi", " there", " A", "B", " C", "!"]

    def test_generation_of_logprobs_without_a_prompt_is_the_same_object(self) -> None:
        lp = make(["a", "b"], top_logprobs=[{"a": -1.0}, {"b": -2.0}])
        assert lp.get_generation_logprobs() is lp
        assert lp.get_generation_logprobs().top_logprobs is lp.top_logprobs
        echoed = sliceable()
        assert echoed.get_generation_logprobs() is not echoed

    def test_threads_reading_a_view_first_get_the_same_list(self) -> None:
        lp = sliceable()
        barrier = threading.Barrier(8)
        seen: list[int] = []

        def read() -> None:
            barrier.wait()
            seen.append(id(lp.top_logprobs))

        pool = [threading.Thread(target=read) for _ in range(8)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        assert len(seen) == 8 and len(set(seen)) == 1


# -- the packed format ---------------------------------------------------------------------------------------


def reseal(data: bytes) -> bytes:
    """``data`` with its checksum recomputed, so the checks behind the checksum are reached."""
    return data[:6] + struct.pack("<I", zlib.crc32(data[_PREFIX.size :])) + data[_PREFIX.size :]


FIELD_NAMES = [
    *("flags", "codes", "separator", "n", "n_strings", "text_bytes", "n_top", "n_lp_none", "n_samp_none"),
    *("n_top_none", "top_k", "num_prompt_tokens", "prompt_length", "off_base"),
]


def rewrite(data: bytes, **changes: Any) -> bytes:
    """``data`` with header fields replaced (by the names above), resealed."""
    fields = dict(zip(FIELD_NAMES, _FIELDS.unpack_from(data, _PREFIX.size), strict=True))
    fields.update(changes)
    head = _FIELDS.pack(*(fields[name] for name in FIELD_NAMES))
    return reseal(data[: _PREFIX.size] + head + data[_PREFIX.size + _FIELDS.size :])


def v1(lp: Logprobs) -> bytes:
    """``lp`` in packed format version 1, which the tests of its header take apart (still read: older caches)."""
    return pack(lp._cols, num_prompt_tokens=lp.num_prompt_tokens, prompt_length=lp.prompt_length, echo=lp.echo,
                version=1)  # fmt: skip


def header_v1(data: bytes) -> Header:
    header = read_header(data)
    assert isinstance(header, Header)
    return header


def unpacked(data: bytes) -> Logprobs:
    """A Logprobs from ``data``, fully unpacked."""
    lp = Logprobs.from_packed(data)
    _ = lp.top_k  # reading any column unpacks them all
    return lp


def assert_round_trip(lp: Logprobs) -> Logprobs:
    data = lp.packed()
    assert isinstance(data, bytes) and data[:4] == MAGIC
    lazy = Logprobs.from_packed(data)
    assert (lazy.num_prompt_tokens, lazy.prompt_length, lazy.echo) == (lp.num_prompt_tokens, lp.prompt_length, lp.echo)
    assert lazy == lp
    assert lazy.to_dict() == lp.to_dict()
    assert lazy.sampling_logprobs == lp.sampling_logprobs
    assert lazy.top_k == lp.top_k and len(lazy) == len(lp)
    assert [type(v) for v in lazy.token_logprobs] == [type(v) for v in lp.token_logprobs]
    assert lazy.packed() == data  # unpacked and packed again in this process: the same bytes
    return lazy


def _ragged() -> list[dict[str, float] | None]:
    return [{"a": -1.0}, None, {"a": -1.0, "b": -2.0, "c": -3.21}, {}, {"x": -0.5, "y": -0.75}]


ROUND_TRIPS: dict[str, Any] = {
    "empty": lambda: Logprobs(),
    "no top": lambda: make(["a", "bc", "d"], [-1.0, -2.0, -3.0]),
    "uniform top": lambda: make(["a", "b"], top_logprobs=[{"a": -1.0, "z": -2.0}, {"b": -0.5, "a": -4.0}]),
    "uniform top with None": lambda: make(["a", "b", "c"], top_logprobs=[None, {"a": -1.0}, {"c": -1.5}]),
    "ragged top": lambda: make(["a", "b", "c", "d", "e"], top_logprobs=_ragged()),
    "only None top": lambda: make(["a", "b"], top_logprobs=[None, None]),
    "only empty top": lambda: make(["a", "b"], top_logprobs=[{}, {}]),
    "None positions": lambda: make(["a", "b", "c"], [None, -1.0, None]),
    "only None": lambda: make(["a"], [None]),
    "sampling logprobs": lambda: make(["a", "b", "c"], sampling_logprobs=[None, -0.21, -1.5]),
    "explicit offsets": lambda: make(["ab", "c", "d"], text_offset=[3, 9, 27]),
    "derived offsets": lambda: make(["ab", "c", "d"], text_offset=[5, 7, 8]),
    "offsets over int32": lambda: make(["a", "b"], text_offset=[0, 2**40]),
    "token ids": lambda: make(["a", "b"], token_ids=[200_000, 0]),
    "token ids over int32": lambda: make(["a", "b", "c"], token_ids=[2**40, -1, 2**63 - 1]),
    "float64 values": lambda: Logprobs(["a", "b"], DECIMALS[:2], [{"a": DECIMALS[2]}, {"b": DECIMALS[3]}]),
    "infinities": lambda: make(["a", "b"], [-math.inf, -0.0], top_logprobs=[{"a": math.inf}, {"b": -math.inf}]),
    "echo": sliceable,
    "prompt slice": lambda: sliceable().get_prompt_logprobs(),
    "generation slice": lambda: sliceable().get_generation_logprobs(),
    "ragged slice": lambda: make(["a", "b", "c", "d", "e"], top_logprobs=_ragged()).get_prompt_logprobs(),
    "odd attributes": lambda: make(["a"], num_prompt_tokens=5, prompt_length=-3, echo=True),
    "unusual strings": lambda: make(["", "\0", "a\0b", "é", "🤔", "\ud83d", " "], top_logprobs=[{"\0": -1.0}] * 7),
    "every column": lambda: Logprobs(
        ["x", "yy", "z"],
        [None, -0.21, -2.5],
        [None, {"yy": -0.21, "q": -1.3012000000000001}, {"z": -2.5}],
        [0, 10, 20],
        [7, 2**33, 9],
        sampling_logprobs=[None, -0.25, -2.0],
        num_prompt_tokens=1,
        prompt_length=1,
        echo=True,
    ),
}


class TestPackedRoundTrip:
    @pytest.mark.parametrize("build", list(ROUND_TRIPS.values()), ids=list(ROUND_TRIPS))
    def test_round_trip(self, build: Any) -> None:
        lp = build()
        lazy = assert_round_trip(lp)
        assert pickle.loads(pickle.dumps(lazy)) == lp

    def test_nan_and_negative_zero_survive(self) -> None:
        lazy = unpacked(make(["a", "b"], [math.nan, -0.0], top_logprobs=[{"a": math.nan}, None]).packed())
        first, second = lazy.token_logprobs
        alternatives = lazy.top_logprobs[0]
        assert first is not None and math.isnan(first)
        assert second == 0.0 and math.copysign(1.0, second) == -1.0
        assert alternatives is not None and math.isnan(alternatives["a"])

    @pytest.mark.parametrize("distinct", [1, 256, 257, 3000])
    def test_keys_are_as_narrow_as_the_distinct_tokens(self, distinct: int) -> None:
        prefix = uuid.uuid4().hex
        words = [f"{prefix}{i}" for i in range(distinct)]
        rng = random.Random(distinct)
        tokens = [rng.choice(words) for _ in range(2 * distinct)] + words  # every word at least once
        top: list[dict[str, float] | None] = [{t: -1.0, rng.choice(words): -2.0} for t in tokens]
        lp = make(tokens, top_logprobs=top)
        data = v1(lp)
        assert header_v1(data).key == ("B" if distinct <= 256 else "H")
        assert_round_trip(lp)

    def test_more_than_65536_distinct_tokens(self) -> None:
        tokens = [f"many-{uuid.uuid4().hex}" for _ in range(65_600)]
        lp = make(tokens)
        assert lp._cols.tok.typecode == "I"
        data = v1(lp)
        assert header_v1(data).key == "I"
        assert unpacked(data).tokens == tokens

    def test_wide_vocabulary_indices_pack_as_narrow_ranks(self) -> None:
        _intern([f"fill-{uuid.uuid4().hex}" for _ in range(66_000)])  # this process's vocabulary passes 65,536
        tokens = [f"late-{i}-{uuid.uuid4().hex}" for i in range(300)]
        lp = make(tokens, top_logprobs=[{t: -1.0} for t in tokens])
        assert lp._cols.tok.typecode == "I"
        assert header_v1(v1(lp)).key == "H"
        assert_round_trip(lp)

    def test_a_token_holding_nul_moves_the_separator(self) -> None:
        lp = make(["a\0b", "\0", "c"])
        header = header_v1(v1(lp))
        assert header.separator != 0 and header.n_strings == 3
        assert unpacked(v1(lp)).tokens == ["a\0b", "\0", "c"]

    def test_packed_size_does_not_exceed_the_pickled_form(self) -> None:
        """256 tokens with 5 alternatives each: fewer bytes than the pickled columns older versions stored."""
        rng = random.Random(7)
        vocab = [f"{'Ġ' if i % 3 else ''}w{i}" for i in range(5000)]
        tokens = rng.choices(vocab, k=256)
        top: list[dict[str, float] | None] = []
        for token in tokens:
            alternatives = {token: -0.5}
            while len(alternatives) < 5:
                alternatives[rng.choice(vocab)] = -rng.randint(1, 4096) / 256
            top.append(alternatives)
        lp = Logprobs(tokens, [-rng.randint(0, 4096) / 256 for _ in tokens], top, token_ids=list(range(256)))
        old_form = {  # what older versions pickled: every string, and the raw columns
            "tokens": lp.tokens,
            "lp": (lp._cols.lp.typecode, lp._cols.lp.tobytes(), ()),
            "ids": ("i", lp._cols.ids.tobytes() if lp._cols.ids is not None else b""),
            "top_tok": _strings(lp._cols.top_tok or ()),
            "top_lp": ("f", (lp._cols.top_lp or array("f")).tobytes()),
        }
        assert len(lp.packed()) < len(pickle.dumps(old_form, protocol=pickle.HIGHEST_PROTOCOL))


class TestPackedMalformed:
    def test_every_truncation_is_refused(self) -> None:
        data = v1(sliceable())
        for end in range(len(data)):
            with pytest.raises(ValueError, match="not packed logprobs"):
                Logprobs.from_packed(data[:end])

    def test_trailing_bytes_are_refused(self) -> None:
        with pytest.raises(ValueError, match="header describes"):
            Logprobs.from_packed(v1(sliceable()) + b"\0")

    @pytest.mark.parametrize(
        "data",
        [
            b"",
            b"FWLP",
            b"hello world, this is not a packed form at all: long enough to hold a header" * 2,
            b'{"tokens": ["a"], "token_logprobs": [-1.0]}',
            b"cos\nsystem\n(S'echo unsafe'\ntR.",  # a protocol-0 pickle that would run a command
            bytes(range(256)),
        ],
        ids=["empty", "magic only", "text", "json", "pickle-0", "bytes"],
    )
    def test_foreign_bytes_are_refused(self, data: bytes) -> None:
        with pytest.raises(ValueError, match="not packed logprobs"):
            Logprobs.from_packed(data)

    def test_an_old_pickled_entry_is_refused_without_unpickling(self) -> None:
        old = pickle.dumps({"tokens": ["a"], "lp": ("f", b"\0\0\0\0", ()), "meta": (0, 0, False)}, protocol=5)
        with pytest.raises(ValueError, match="pickle"):
            Logprobs.from_packed(old)

    @pytest.mark.parametrize("value", [None, "FWLP", {"tokens": []}, 3])
    def test_not_bytes(self, value: object) -> None:
        with pytest.raises(ValueError, match="expected bytes"):
            Logprobs.from_packed(value)  # type: ignore[arg-type]

    def test_another_version_is_refused(self) -> None:
        data = v1(sliceable())
        other = data[:4] + struct.pack("<H", FORMAT_VERSION + 1) + data[6:]
        with pytest.raises(ValueError, match=f"format version {FORMAT_VERSION + 1}"):
            Logprobs.from_packed(other)

    def test_a_flipped_bit_fails_the_checksum(self) -> None:
        data = bytearray(v1(sliceable()))
        data[-1] ^= 0x01
        with pytest.raises(ValueError, match="checksum"):
            Logprobs.from_packed(bytes(data))

    def test_bytearray_and_memoryview_are_accepted(self) -> None:
        data = v1(sliceable())
        assert Logprobs.from_packed(bytearray(data)) == sliceable()  # type: ignore[arg-type]
        assert Logprobs.from_packed(memoryview(data)) == sliceable()  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("changes", "message"),
        [
            ({"flags": 0x82}, "unknown flags"),
            ({"codes": b"Hxfiiff"}, "typecode 'x' is not allowed for the logprob column"),
            ({"codes": b"\0dfiiff"}, "for the token key column"),
            ({"codes": b"Bdfi\0fQ"}, "alternatives per position"),
            ({"separator": 0x110000}, "not a code point"),
            ({"top_k": 3}, "both a uniform and a varying"),
            ({"n": 8}, "header describes"),
            ({"n_top": 2**32 - 1}, "header describes"),
        ],
    )
    def test_header_checks(self, changes: dict[str, Any], message: str) -> None:
        ragged = v1(make(["a", "b", "c", "d", "e"], top_logprobs=_ragged(), token_ids=[1, 2, 3, 4, 5]))
        with pytest.raises(ValueError, match=message):
            Logprobs.from_packed(rewrite(ragged, **changes))

    def test_alternatives_without_their_column(self) -> None:
        data = v1(make(["a"], top_logprobs=[{"a": -1.0}]))
        with pytest.raises(ValueError, match="column is absent"):
            Logprobs.from_packed(rewrite(data, codes=header_v1(data).key.encode() + b"f\0\0\0\0\0"))

    def _lazy_error(self, data: bytes, message: str) -> None:
        lazy = Logprobs.from_packed(data)  # the header and checksum hold
        with pytest.raises(ValueError, match=message):
            _ = lazy.tokens
        with pytest.raises(ValueError, match=message):  # still refused, never half unpacked
            len(lazy)

    def test_strings_that_are_not_utf8(self) -> None:
        data = v1(make(["abc", "d"]))
        start = _PREFIX.size + _FIELDS.size
        self._lazy_error(reseal(data[:start] + b"\xff" + data[start + 1 :]), "not UTF-8")

    def test_a_string_count_that_does_not_match(self) -> None:
        data = v1(make(["abc", "d"]))
        self._lazy_error(rewrite(data, n_strings=3), "2 strings where the header counts 3")
        split_more = v1(make(["x", "axb"]))  # "x" and "axb" joined by NUL, split at each "x"
        self._lazy_error(rewrite(split_more, separator=ord("x")), "3 strings where the header counts 2")

    def test_a_key_naming_no_string(self) -> None:
        data = v1(make(["abc", "d", "abc"]))
        header = header_v1(data)
        at = _PREFIX.size + _FIELDS.size + header.text_bytes
        keys = data[at : at + 3]
        assert header.key == "B" and sorted(set(keys)) == [0, 1] and keys[0] == keys[2]
        self._lazy_error(reseal(data[:at] + keys[:2] + b"\x09" + data[at + 3 :]), "name 3 distinct strings")

    def test_alternatives_that_do_not_add_up(self) -> None:
        data = v1(make(["a", "b", "c", "d", "e"], top_logprobs=_ragged()))
        sizes_at = len(data) - 4 - 5  # the sizes ('B'), then the one position without alternatives (u32)
        assert data[sizes_at : sizes_at + 5] == bytes([1, 0, 3, 0, 2])
        self._lazy_error(reseal(data[:sizes_at] + bytes([1, 0, 3, 0, 3]) + data[sizes_at + 5 :]), "do not add up")
        self._lazy_error(reseal(data[:sizes_at] + bytes([1, 1, 3, 0, 1]) + data[sizes_at + 5 :]), "do not add up")

    def test_uniform_alternatives_that_do_not_add_up(self) -> None:
        data = v1(make(["a", "b"], top_logprobs=[{"a": -1.0, "b": -2.0}, {"b": -1.0, "a": -2.0}]))
        self._lazy_error(rewrite(data, top_k=1, n_top=4), "header describes|not 1 at each")

    @pytest.mark.parametrize("positions", [[3], [9], [2, 1], [1, 1]])
    def test_none_positions_out_of_order_or_range(self, positions: list[int]) -> None:
        data = v1(make(["a", "b", "c"], [None, -1.0, None] if len(positions) == 2 else [None, -1.0, -2.0]))
        header = header_v1(data)
        # after the strings, the three keys and the three logprobs
        at = _PREFIX.size + _FIELDS.size + header.text_bytes + 3 * array(header.key).itemsize + 3 * 4
        count = header.n_lp_none
        assert count == len(positions)
        new = b"".join(struct.pack("<I", p) for p in positions)
        self._lazy_error(reseal(data[:at] + new + data[at + 4 * count :]), "not ascending positions below 3")

    def test_random_byte_flips_raise_nothing_but_value_error(self) -> None:
        rng = random.Random(20240601)
        originals = [sliceable().packed(), ROUND_TRIPS["every column"]().packed(), ROUND_TRIPS["ragged top"]().packed()]
        originals += [v1(sliceable()), v1(ROUND_TRIPS["every column"]())]
        refused = 0
        for trial in range(600):
            data = bytearray(rng.choice(originals))
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] ^= rng.randint(1, 255)
            # Half the trials fix the checksum, to reach the checks behind it.
            candidate = reseal(bytes(data)) if trial % 2 else bytes(data)
            try:
                lp = Logprobs.from_packed(candidate)
                lp.to_dict(), lp.sampling_logprobs, lp.top_k, lp.sum(), list(lp)
                lp.get_prompt_logprobs().packed(), lp.packed()
            except ValueError:
                refused += 1
            else:
                assert trial % 2, "a flipped byte passed the checksum"
        assert refused > 300


def test_setstate_on_a_used_instance_replaces_its_columns() -> None:
    lp = make(["a", "b"])
    assert lp.tokens == ["a", "b"]
    lp.__setstate__(sliceable().packed())
    assert lp == sliceable() and lp.tokens == sliceable().tokens


class TestVerifiedBytes:
    """``from_packed(verified=True)``: the caller checked integrity (a cache record's CRC); loading is cheap."""

    def sample(self) -> Logprobs:
        return Logprobs(["a", "b", "c"], [None, -0.5, -1.0], [None, {"b": -0.5}, {"c": -1.0}], echo=True,
                        num_prompt_tokens=1, prompt_length=1)  # fmt: skip

    def test_same_logprobs_as_the_checked_path(self) -> None:
        packed = self.sample().packed()
        fast = Logprobs.from_packed(packed, verified=True)
        assert (fast.echo, fast.num_prompt_tokens, fast.prompt_length) == (True, 1, 1)
        assert fast.packed() is packed  # still packed: nothing was unpacked to load it
        assert fast == Logprobs.from_packed(packed) == self.sample()

    def test_foreign_bytes_are_still_refused_at_once(self) -> None:
        with pytest.raises(ValueError, match="not packed logprobs"):
            Logprobs.from_packed(b"\x00" * 64, verified=True)

    def test_a_bad_header_behind_good_magic_is_refused_at_first_read(self) -> None:
        packed = bytearray(v1(self.sample()))
        packed[-1] ^= 0xFF  # no checksum pass on verified bytes; the full check runs before any column is read
        lp = Logprobs.from_packed(bytes(packed), verified=True)
        with pytest.raises(ValueError):
            _ = lp.tokens, lp.token_logprobs, lp.top_logprobs


# -- a shared prefix (echo paid once) ------------------------------------------------------------------------


class _Part:
    """A minimal holder of shared prompt positions (the echo module's PromptPart is one)."""

    def __init__(self, logprobs: Logprobs) -> None:
        self.logprobs = logprobs


def columns(n: int, start: int, *, top: bool = True, ids: bool = True, sampling: bool = True) -> dict[str, Any]:
    tokens = [f"w{start + i}é" for i in range(n)]
    return {
        "tokens": tokens,
        "token_logprobs": [-0.1 * (start + i + 1) for i in range(n)],
        "top_logprobs": [{t: -0.1, f"alt{start + i}": -2.5} for i, t in enumerate(tokens)] if top else None,
        "text_offset": [sum(map(len, tokens[:i])) + start * 10 for i in range(n)],
        "token_ids": list(range(start, start + n)) if ids else None,
        "sampling_logprobs": [-0.2 * (start + i + 1) for i in range(n)] if sampling else None,
    }


def whole_and_shared(
    prompt: dict[str, Any], generated: dict[str, Any], *, start: int | None = None, prompt_length: int = 9
) -> tuple[Logprobs, Logprobs, _Part]:
    """The echoed run as one Logprobs, and the same run as a prefix shared by a generated-only Logprobs."""
    from fw_rollouts._logprobs import share_prefix

    k = len(prompt["tokens"])
    prompt = {**prompt, "token_logprobs": [None, *prompt["token_logprobs"][1:]]}
    if prompt["top_logprobs"] is not None:
        prompt["top_logprobs"] = [None, *prompt["top_logprobs"][1:]]
    if prompt["sampling_logprobs"] is not None:
        prompt["sampling_logprobs"] = [None, *prompt["sampling_logprobs"][1:]]
    first_generated = prompt["text_offset"][-1] + len(prompt["tokens"][-1])
    moved = [o - (generated["text_offset"] or [0])[0] + first_generated for o in generated["text_offset"]]

    def joined(name: str) -> Any:
        a, b = prompt[name], generated[name] if name != "text_offset" else moved
        if a is None and b is None:
            return None
        if name == "token_ids" and (a is None or b is None):  # a reply sends an id with every token or none
            return a if b is None and not generated["tokens"] else None
        return (a if a is not None else [None] * k) + (b if b is not None else [None] * len(generated["tokens"]))

    names = ("tokens", "token_logprobs", "top_logprobs", "text_offset", "token_ids")
    whole = Logprobs(*(joined(n) for n in names), sampling_logprobs=joined("sampling_logprobs"),
                     num_prompt_tokens=k, prompt_length=prompt_length, echo=True)  # fmt: skip
    part = _Part(whole.get_prompt_logprobs())
    rest = Logprobs(*(generated[n] for n in names), sampling_logprobs=generated["sampling_logprobs"])
    shared = share_prefix(part, rest, first_generated if start is None else start)
    return whole, shared, part


def same_run(a: Logprobs, b: Logprobs) -> None:
    assert a == b and b == a
    for name in ("tokens", "token_logprobs", "top_logprobs", "text_offset", "token_ids", "sampling_logprobs"):
        assert getattr(a, name) == getattr(b, name), name
    assert (len(a), a.num_prompt_tokens, a.prompt_length, a.echo, a.top_k) == (
        len(b), b.num_prompt_tokens, b.prompt_length, b.echo, b.top_k,
    )  # fmt: skip
    assert a.to_dict() == b.to_dict() and list(a) == list(b)
    assert a.sum() == b.sum() and repr(a.mean()) == repr(b.mean())
    assert a.get_prompt_logprobs() == b.get_prompt_logprobs()
    assert a.get_generation_logprobs() == b.get_generation_logprobs()
    assert Logprobs.from_packed(a.packed()) == b and Logprobs.from_packed(b.packed()) == a


class TestSharedPrefix:
    def test_reads_as_the_whole_run(self) -> None:
        whole, shared, part = whole_and_shared(columns(5, 0), columns(3, 5))
        same_run(shared, whole)
        assert shared.get_prompt_logprobs() is part.logprobs
        assert shared.tokens is shared.tokens and shared.top_logprobs[2] is part.logprobs.top_logprobs[2]

    @pytest.mark.parametrize(
        ("prompt", "generated"),
        [
            ({"sampling": False}, {}),
            ({}, {"sampling": False}),
            ({"sampling": False}, {"sampling": False}),
            ({"ids": False}, {}),
            ({}, {"ids": False}),
            ({"top": False}, {}),
            ({}, {"top": False}),
        ],
        ids=["prompt-no-sampling", "gen-no-sampling", "no-sampling", "prompt-no-ids", "gen-no-ids", "prompt-no-top",
             "gen-no-top"],
    )  # fmt: skip
    def test_columns_one_part_lacks(self, prompt: dict[str, bool], generated: dict[str, bool]) -> None:
        whole, shared, _ = whole_and_shared(columns(4, 0, **prompt), columns(3, 4, **generated))
        same_run(shared, whole)

    def test_no_generated_position(self) -> None:
        whole, shared, _ = whole_and_shared(columns(4, 0), columns(0, 4, ids=False, sampling=False, top=False))
        same_run(shared, whole)
        assert shared.token_ids == [0, 1, 2, 3]  # the prompt's, as the echoed reply gives them

    @pytest.mark.parametrize("base", [0, 7, 1000])
    def test_generated_offsets_move_to_the_start_given(self, base: int) -> None:
        generated = columns(3, 4)
        generated["text_offset"] = [base, base + 3, base + 6]
        whole, shared, _ = whole_and_shared(columns(4, 0), generated)
        same_run(shared, whole)
        assert shared.text_offset[4:] == [12, 15, 18]

    def test_offsets_taken_as_they_are_without_a_start(self) -> None:
        from fw_rollouts._logprobs import share_prefix

        whole, shared, part = whole_and_shared(columns(4, 0), columns(3, 4))
        rest = shared.get_generation_logprobs()
        again = share_prefix(part, Logprobs.from_packed(rest.packed(), verified=True))
        same_run(again, whole)

    def test_sum_is_the_same_float_as_the_whole_runs(self) -> None:
        rng = random.Random(3)
        prompt, generated = columns(300, 0), columns(50, 300)
        prompt["token_logprobs"] = [-rng.random() * 10 ** rng.randint(-8, 3) for _ in range(300)]
        generated["token_logprobs"] = [-rng.random() * 10 ** rng.randint(-8, 3) for _ in range(50)]
        whole, shared, _ = whole_and_shared(prompt, generated)
        assert shared.sum() == whole.sum() and shared.mean() == whole.mean()

    def test_pickle_keeps_one_part_for_many(self) -> None:
        whole, shared, part = whole_and_shared(columns(50, 0), columns(3, 50))
        from fw_rollouts._logprobs import prefix_of, share_prefix

        others = [share_prefix(part, shared.get_generation_logprobs()) for _ in range(4)]
        back = pickle.loads(pickle.dumps([shared, *others]))
        assert all(b == whole for b in back)
        assert len({id(prefix_of(b)) for b in back}) == 1 and prefix_of(back[0]) is not None
        # Five wholes pickled apart hold the prompt five times; these hold it once (their own tokens are small).
        apart = [Logprobs.from_packed(whole.packed()) for _ in range(5)]
        assert len(pickle.dumps([shared, *others])) < len(pickle.dumps(apart)) / 2
        assert copy.deepcopy(shared) == whole

    def test_nbytes_counts_the_own_positions_only(self) -> None:
        _, shared, part = whole_and_shared(columns(200, 0), columns(3, 200))
        assert shared.nbytes() < part.logprobs.nbytes() / 10
        assert shared.get_generation_logprobs().nbytes() <= shared.nbytes()

    def test_refuses_what_is_not_a_prompt_and_a_generation(self) -> None:
        from fw_rollouts._logprobs import share_prefix

        whole, shared, part = whole_and_shared(columns(4, 0), columns(3, 4))
        with pytest.raises(ValueError, match="generated positions alone"):
            share_prefix(part, whole)
        with pytest.raises(ValueError, match="generated positions alone"):
            share_prefix(part, shared)
        with pytest.raises(ValueError, match="echoed prompt positions alone"):
            share_prefix(_Part(whole), shared.get_generation_logprobs())

    def test_generation_offset(self) -> None:
        from fw_rollouts._logprobs import generation_offset

        whole, shared, part = whole_and_shared(columns(4, 0), columns(3, 4))
        assert generation_offset(whole) == generation_offset(shared) == whole.text_offset[4] == 12
        assert generation_offset(part.logprobs) == 12  # no generated position: just past the last prompt token
        empty = whole_and_shared(columns(4, 0), columns(0, 4))[1]
        assert generation_offset(empty) == 12
