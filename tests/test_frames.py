"""Results as arrays and frames (fw_rollouts._frames): Logprobs.to_numpy / to_pandas, FwResponse / FwRollouts.to_pandas,
fw_rollouts.to_pandas over a study; the optional extras missing; sampling_logprob kept through cache and files."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from _helpers import MakeClient, same_rollouts
from fw_rollouts import (
    FwResponse,
    FwRollouts,
    InvalidTypeError,
    Logprobs,
    load_study,
    to_pandas,
)
from fw_rollouts.testing import FireworksSimulator

pd: Any = pytest.importorskip("pandas")
np: Any = pytest.importorskip("numpy")

HALF, QUARTER = math.log(0.5), math.log(0.25)
FIELDS = ["token", "token_id", "logprob", "prob", "rank", "topk_entropy", "residual_mass", "is_prompt",
          "sampling_logprob", "text_offset"]  # fmt: skip


def echoed() -> Logprobs:
    return Logprobs(
        ["<s>", "Q", " a", " b"],
        [None, -1.0, HALF, -3.0],
        [None, {"Q": -1.0, "R": -2.0}, {" a": HALF, " z": QUARTER}, {" y": -0.5, " w": -1.5, " b": -3.0}],
        [0, 3, 4, 6],
        [7, 8, 9, 10],
        sampling_logprobs=[None, None, -0.25, -2.5],
        num_prompt_tokens=2, prompt_length=4, echo=True,
    )  # fmt: skip


def generate(make_client: MakeClient, n: int = 3, **options: Any) -> FwRollouts:
    async def main() -> FwRollouts:
        async with make_client(**options) as client:
            return await client.generate("Frame me", n, seed=5)

    return asyncio.run(main())


# -- one sample's positions -----------------------------------------------------------------------------------------


def test_to_numpy_has_every_field_with_nan_and_minus_one_for_missing() -> None:
    a = echoed().to_numpy()
    assert list(a.dtype.names) == FIELDS and len(a) == 4
    assert list(a["token"]) == ["<s>", "Q", " a", " b"]
    assert list(a["token_id"]) == [7, 8, 9, 10] and list(a["text_offset"]) == [0, 3, 4, 6]
    assert math.isnan(a["logprob"][0]) and list(a["logprob"][1:]) == [-1.0, HALF, -3.0]
    assert a["prob"][2] == pytest.approx(0.5) and math.isnan(a["prob"][0])
    assert list(a["rank"]) == [-1, 0, 0, -1]  # " b" was added beyond the top 2
    assert list(echoed().to_numpy(k=3)["rank"]) == [-1, 0, 0, 2]
    assert math.isnan(a["topk_entropy"][0]) and a["topk_entropy"][2] == pytest.approx(math.log(2))
    assert a["residual_mass"][2] == pytest.approx(0.25)
    assert list(a["is_prompt"]) == [True, True, False, False]
    assert np.isnan(a["sampling_logprob"][:2]).all() and list(a["sampling_logprob"][2:]) == [-0.25, -2.5]
    # Without ids or sampling logprobs: -1 and NaN throughout.
    b = Logprobs(["x"], [-1.0]).to_numpy()
    assert b["token_id"][0] == -1 and math.isnan(b["sampling_logprob"][0]) and not b["is_prompt"][0]


def test_to_pandas_is_the_same_table() -> None:
    frame = echoed().to_pandas()
    assert list(frame.columns) == FIELDS and list(frame.index) == [0, 1, 2, 3]
    records = echoed().to_numpy()
    for name in FIELDS:
        assert frame[name].tolist() == pytest.approx(records[name].tolist(), nan_ok=True) or name == "token"
    assert frame["token"].tolist() == ["<s>", "Q", " a", " b"]
    assert frame.loc[~frame.is_prompt, "logprob"].sum() == pytest.approx(HALF - 3.0)


def test_a_response_frame_is_its_logprobs_frame(make_client: MakeClient) -> None:
    rollouts = generate(make_client, 2, max_tokens=10)
    r = rollouts[1]
    assert r.logprobs is not None
    frame = r.to_pandas()
    assert frame["token"].tolist() == r.logprobs.tokens
    assert int(frame.is_prompt.sum()) == r.logprobs.num_prompt_tokens > 0
    generated = frame[~frame.is_prompt]
    assert generated.logprob.sum() == pytest.approx(r.get_generation_logprobs().sum())  # type: ignore[union-attr]
    assert (generated["rank"] >= -1).all() and generated["token_id"].ge(0).all()
    empty = FwResponse(full="no logprobs").to_pandas()
    assert list(empty.columns) == FIELDS and len(empty) == 0


# -- one row per sample ---------------------------------------------------------------------------------------------


def test_rollouts_frame_has_a_row_per_sample(make_client: MakeClient) -> None:
    rollouts = generate(make_client, 4, max_tokens=16, temperature=1.0)
    frame = rollouts.to_pandas()
    assert len(frame) == 4 and frame["seed"].tolist() == [5, 6, 7, 8]
    assert frame.columns[:9].tolist() == ["item", "seed", "index", "text", "reasoning", "content", "finish_reason",
                                          "completed_reasoning", "num_tokens"]  # fmt: skip
    for row, r in zip(frame.itertuples(), rollouts, strict=True):
        lp = r.get_generation_logprobs()
        assert lp is not None
        assert row.text == r.full and row.finish_reason == r.finish_reason and row.model == rollouts.model
        assert row.num_tokens == len(lp) == r.usage.completion_tokens
        assert row.sum_logprob == pytest.approx(lp.sum()) and row.mean_logprob == pytest.approx(lp.mean())
        # Recomputed here from the alternatives themselves.
        entropies = [-sum(math.exp(v) * v for v in alts.values()) for alts in lp.top_logprobs if alts]
        assert row.mean_topk_entropy == pytest.approx(sum(entropies) / len(entropies))
        residuals = [1 - sum(math.exp(v) for v in alts.values()) for alts in lp.top_logprobs if alts]
        assert row.mean_residual_mass == pytest.approx(sum(residuals) / len(residuals), abs=1e-12)
        assert row.prompt_tokens == r.usage.prompt_tokens and not row.cached
    assert str(frame["num_tokens"].dtype) == "Int64" and str(frame["completed_reasoning"].dtype) == "boolean"


def test_without_logprobs_the_figures_are_missing(make_client: MakeClient) -> None:
    frame = generate(make_client, 2, max_tokens=8, logprobs=None).to_pandas()
    assert frame["num_tokens"].isna().all() and frame["sum_logprob"].isna().all()
    assert frame["completion_tokens"].gt(0).all()


def test_a_study_to_pandas_from_generate_many_and_load_study(make_client: MakeClient, tmp_path: Path) -> None:
    path = tmp_path / "study.jsonl"

    async def main() -> list[FwRollouts]:
        async with make_client(max_tokens=8) as client:
            return await client.generate_many(["first", "second", "third"], n_samples=2, output=path)

    results = asyncio.run(main())
    frame = to_pandas(results)
    assert frame["item"].tolist() == [0, 0, 1, 1, 2, 2] and frame["seed"].tolist() == [0, 1] * 3
    back = to_pandas(load_study(path))
    columns = [c for c in frame.columns if c != "cached"]
    pd.testing.assert_frame_equal(frame[columns], back[columns])
    # Results of separate calls: each its own item.
    single = [results[2], results[0]]
    assert to_pandas(single)["item"].tolist() == [0, 0, 1, 1]
    assert to_pandas(results[1])["item"].tolist() == [1, 1]  # one FwRollouts: the samples' own item
    empty = to_pandas([])
    assert len(empty) == 0 and "mean_logprob" in empty.columns


def test_to_pandas_refuses_what_is_not_results() -> None:
    with pytest.raises(InvalidTypeError, match="results"):
        to_pandas("study.jsonl")  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError, match=r"results\[1\]"):
        to_pandas([FwRollouts("p", 1, None, None, None, "m", []), FwResponse(full="x")])  # type: ignore[list-item]


# -- the optional extras missing ------------------------------------------------------------------------------------


CALLS = [
    ("pandas", "Logprobs(['a'], [-1.0]).to_pandas()", "pandas"),
    ("pandas", "FwRollouts('p', 1, None, None, None, 'm', []).to_pandas()", "pandas"),
    ("pandas", "FwResponse(full='x').to_pandas()", "pandas"),
    ("pandas", "fw_rollouts.to_pandas([])", "pandas"),
    ("numpy", "Logprobs(['a'], [-1.0]).to_numpy()", "pandas"),
    ("matplotlib", "fw_rollouts.plot_logprobs(Logprobs(['a'], [-1.0]))", "plot"),
]


def test_a_missing_extra_is_named() -> None:
    # A real interpreter in which the extras cannot be imported (None in sys.modules blocks an import); one for
    # every call, as starting one costs seconds.
    script = textwrap.dedent("""
        import sys
        for blocked in ("numpy", "pandas", "matplotlib"):
            sys.modules[blocked] = None
        import fw_rollouts
        from fw_rollouts import ConfigurationError, FwResponse, FwRollouts, Logprobs
        for call in sys.argv[1:]:
            try:
                eval(call)
            except ConfigurationError as exc:
                print("ERROR", exc)
            else:
                print("NO ERROR")
    """)
    argv = [sys.executable, "-c", script, *(call for _, call, _ in CALLS)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert len(lines) == len(CALLS)
    for line, (blocked, call, extra) in zip(lines, CALLS, strict=True):
        assert line.startswith("ERROR") and f"needs {blocked}" in line, (call, line)
        assert f"pip install 'fw-rollouts[{extra}]'" in line, (call, line)


# -- sampling_logprob kept beside logprob ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_sampling_logprobs_survive_cache_files_and_frames(
    make_client: MakeClient, sim: FireworksSimulator, tmp_path: Path, suffix: str
) -> None:
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    study = tmp_path / f"study{suffix}"

    async def run(output: Path | None) -> tuple[FwRollouts, list[FwRollouts]]:
        # The content logprobs format (logprobs: true) is the one that carries sampling_logprob.
        async with make_client(max_tokens=10, temperature=0.7, top_p=0.9, logprobs_format="content") as client:
            one = await client.generate("Sample me warm", 3, seed=2)
            many = await client.generate_many(["Sample me warm"], n_samples=3, seed=2, output=output)
            return one, many

    first, _ = asyncio.run(run(study))
    lp = first[0].logprobs
    assert lp is not None and lp.sampling_logprobs is not None
    generated = first[0].get_generation_logprobs()
    assert generated is not None and generated.sampling_logprobs is not None
    # At temperature 0.7 the sampling distribution is not the model's: the two differ, and both are kept.
    assert all(s is not None for s in generated.sampling_logprobs)
    assert generated.sampling_logprobs != generated.token_logprobs
    assert first.settings["temperature"] == 0.7 and first.settings["top_p"] == 0.9  # the settings beside them

    cached, from_cache = asyncio.run(run(None))  # every sample from the cache this time
    assert all(r.cached for r in cached) and all(r.cached for r in from_cache[0])
    for r, s in zip(first, cached, strict=True):
        assert r.logprobs is not None and s.logprobs is not None
        assert s.logprobs.sampling_logprobs == r.logprobs.sampling_logprobs

    first.to_jsonl(tmp_path / "rollouts.jsonl")
    same_rollouts(first, FwRollouts.from_jsonl(tmp_path / "rollouts.jsonl"))

    (loaded,) = load_study(study)
    assert loaded.settings == first.settings
    for r, s in zip(first, loaded, strict=True):
        assert r.logprobs is not None and s.logprobs is not None
        assert s.logprobs.sampling_logprobs == r.logprobs.sampling_logprobs
        frame = s.to_pandas()
        assert r.logprobs.sampling_logprobs is not None
        want = [math.nan if v is None else v for v in r.logprobs.sampling_logprobs]
        assert frame["sampling_logprob"].tolist() == pytest.approx(want, nan_ok=True)
