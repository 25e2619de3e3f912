"""The study file: samples appended as they arrive (JSON Lines or Parquet parts), resumed, read back exactly."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from _helpers import REPO_ROOT, MakeClient, same_rollouts
from fw_rollouts import ConfigurationError, FwResponse, FwRollouts, Logprobs, Usage, ValidationError
from fw_rollouts._jsonl import response_to_dict
from fw_rollouts._study_file import HEADER_NAME, StudyWriter, load_study, read_header, read_samples, study_format
from test_jsonl import awkward_sample, with_alternative_ids

FORMATS = ["jsonl", "parquet"]
CALL_FIELDS = [f.name for f in dataclasses.fields(FwRollouts) if f.name != "responses"]




def item_fields(rollouts: FwRollouts) -> dict[str, Any]:
    """What the lead puts in the header for an item: the call's fields, without its samples."""
    return {name: getattr(rollouts, name) for name in CALL_FIELDS}


def plain_item(n: int = 4) -> dict[str, Any]:
    return {"prompt": "p", "num_responses": n, "temperature": 1.0, "top_p": None, "max_tokens": 8, "model": "m"}


def header(items: int = 2, study: str = "study-1") -> dict[str, Any]:
    return {"study": study, "items": [plain_item() for _ in range(items)]}


def sample(seed: int, tokens: int = 3, text: str = "x") -> FwResponse:
    logprobs = Logprobs(
        [f"t{i}" for i in range(tokens)],
        [-0.5 - i for i in range(tokens)],
        [{f"t{i}": -0.5 - i, "alt": -3.25} for i in range(tokens)],
        list(range(0, 2 * tokens, 2)),
        list(range(100, 100 + tokens)),
    )
    return FwResponse(full=text, content=text, finish_reason="length", seed=seed, usage=Usage(3, tokens, 3 + tokens),
                      logprobs=logprobs, model="m", response_id=f"r{seed}", created=1_700_000_000)  # fmt: skip


def path_for(tmp_path: Path, fmt: str) -> Path:
    return tmp_path / f"study.{fmt}"


async def write(path: Path, samples: list[tuple[int, FwResponse]], head: dict[str, Any] | None = None) -> StudyWriter:
    writer = await StudyWriter.open(path, header=head or header())
    for item, response in samples:
        writer.add(item, response)
    await writer.aclose()
    return writer


# -- round trips ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_samples_from_the_server_round_trip_exactly(make_client: MakeClient, tmp_path: Path, fmt: str) -> None:
    async def main() -> list[FwRollouts]:
        async with make_client(max_tokens=12, samples_per_request=3) as client:
            return [
                await client.generate([{"role": "user", "content": "Héllo ☃, 2+2?"}], 6, seed=7),
                await client.generate("Once upon a time", 4, seed=0, echo=False, logprobs=2),
            ]

    studies = asyncio.run(main())
    # Two calls standing for a study's two items: the second's samples are item 1's.
    studies[1] = dataclasses.replace(studies[1], responses=[dataclasses.replace(r, item=1) for r in studies[1]])
    assert studies[0][0].logprobs is not None and studies[0][0].logprobs.num_prompt_tokens > 0  # echo on
    path = path_for(tmp_path, fmt)

    async def save() -> None:
        writer = await StudyWriter.open(path, header={"study": "s", "items": [item_fields(r) for r in studies]})
        # Arrival order, not seed order: interleaved across items, last seeds first.
        for a, b in zip(reversed(studies[0].responses), reversed([*studies[1].responses, None, None]), strict=True):
            writer.add(0, a)
            if b is not None:
                writer.add(1, b)
        await writer.aclose()

    asyncio.run(save())
    back = load_study(path)
    assert len(back) == 2
    for original, loaded in zip(studies, back, strict=True):
        same_rollouts(original, loaded)
    assert [r.seed for r in back[0]] == list(range(7, 13))
    assert sorted((i, r.seed) for i, r in read_samples(path)) == sorted(
        [(0, s) for s in range(7, 13)] + [(1, s) for s in range(4)]
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_awkward_values_survive_exactly(tmp_path: Path, fmt: str) -> None:
    # Lone surrogates (Parquet strings cannot hold them), -0.0, subnormals, alternatives' order, NUL, big ints.
    awkward = awkward_sample()
    bare = FwResponse(full="", seed=3, usage=Usage())
    empty = FwResponse(full="", seed=4, logprobs=Logprobs(), completed_reasoning=True)
    head = {"study": "s", "items": [{**plain_item(3), "prompt": [{"role": "user", "content": "q\udce9"}]}]}
    path = path_for(tmp_path, fmt)
    asyncio.run(write(path, [(0, awkward), (0, bare), (0, empty)], head))
    expected = FwRollouts(**{**plain_item(3), "prompt": [{"role": "user", "content": "q\udce9"}]},
                          responses=[bare, empty, awkward])  # fmt: skip
    same_rollouts(expected, load_study(path)[0])
    loaded = load_study(path)[0]
    assert loaded[0].logprobs is None and loaded[1].logprobs is not None and len(loaded[1].logprobs) == 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_alternative_ids_survive_both_layouts(tmp_path: Path, fmt: str) -> None:
    with_ids = dataclasses.replace(with_alternative_ids(awkward_sample()), seed=1)
    without = dataclasses.replace(awkward_sample(), seed=2)
    path = path_for(tmp_path, fmt)
    asyncio.run(write(path, [(0, with_ids), (0, without)], {"study": "s", "items": [plain_item(2)]}))
    loaded = load_study(path)[0]
    same_rollouts(FwRollouts(**plain_item(2), responses=[with_ids, without]), loaded)
    assert loaded[0].logprobs is not None and with_ids.logprobs is not None
    assert loaded[0].logprobs.top_token_ids == with_ids.logprobs.top_token_ids is not None
    assert loaded[1].logprobs is not None and loaded[1].logprobs.top_token_ids is None


def test_a_parquet_part_written_before_alternative_ids_were_kept_reads(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from fw_rollouts._study_file import parquet_schema, sample_row

    path = tmp_path / "s.parquet"
    asyncio.run(write(path, [(0, sample(1))], header(1)))  # the header, and a part of today's schema
    old = parquet_schema(pa)
    old = old.remove(old.get_field_index("top_token_ids"))  # the schema of the release before
    row = sample_row(0, sample(2))
    del row["top_token_ids"]
    pq.write_table(pa.Table.from_pylist([row], schema=old), str(path / "part-000001.parquet"))
    loaded = load_study(path)[0]
    assert [r.seed for r in loaded] == [1, 2] and loaded[1] == sample(2)
    assert loaded[1].logprobs is not None and loaded[1].logprobs.top_token_ids is None


def test_the_jsonl_layout_is_a_header_then_a_line_per_sample(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    asyncio.run(write(path, [(1, sample(5)), (0, sample(2))]))
    lines = [json.loads(line) for line in path.read_text(encoding="ascii").splitlines()]
    assert lines[0] == {"format": "fw_rollouts.study", "version": 1, **header()}
    assert [(line["item"], line["response"]["seed"]) for line in lines[1:]] == [(1, 5), (0, 2)]
    assert read_header(path)["study"] == "study-1"


def test_the_parquet_layout_is_a_directory_any_parquet_reader_reads(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "s.parquet"

    async def main() -> None:
        writer = await StudyWriter.open(path, header=header(), batch=2, part_rows=2)
        for seed in range(5):
            writer.add(seed % 2, sample(seed))
        await writer.drain()  # a part of its own
        writer.add(0, sample(9))
        await writer.aclose()

    asyncio.run(main())
    names = sorted(os.listdir(path))
    assert names == [HEADER_NAME, *(f"part-00000{n}.parquet" for n in range(4))]  # 2, 2, 1 (drain), 1 (close)
    table = pq.read_table(str(path))  # the directory as one table
    assert table.num_rows == 6 and table.column("seed").to_pylist() == [0, 1, 2, 3, 4, 9]
    assert table.column("tokens").to_pylist()[0] == ["t0", "t1", "t2"]
    assert table.column("top_tokens").to_pylist()[0][1] == ["t1", "alt"]
    assert table.column("usage").to_pylist()[0] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6,
                                                    "cached_tokens": None}  # fmt: skip
    assert table.column("exact_json").to_pylist() == [None] * 6


# -- resume -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_reopening_a_study_resumes_it(tmp_path: Path, fmt: str) -> None:
    path = path_for(tmp_path, fmt)
    asyncio.run(write(path, [(0, sample(0)), (1, sample(0)), (0, sample(1))]))

    async def again() -> frozenset[tuple[int, int]]:
        writer = await StudyWriter.open(path, header=header())
        done = writer.done
        for item, seed in [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]:
            writer.add(item, sample(seed, text="new"))  # the ones already there are not written again
        await writer.aclose()
        return done

    assert asyncio.run(again()) == {(0, 0), (1, 0), (0, 1)}
    back = load_study(path)
    assert [r.seed for r in back[0]] == [0, 1, 2] and [r.seed for r in back[1]] == [0, 1]
    assert [r.full for r in back[0]] == ["x", "x", "new"] and [r.full for r in back[1]] == ["x", "new"]
    assert len(list(read_samples(path))) == 5


def test_a_torn_last_line_is_cut_off_and_the_study_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    asyncio.run(write(path, [(0, sample(0)), (0, sample(1))]))
    whole = path.read_bytes()
    line = whole.splitlines(keepends=True)[-1]
    path.write_bytes(whole + line.replace(b'"seed": 1', b'"seed": 2')[: len(line) // 2])  # a kill mid-write
    assert [r.seed for _, r in read_samples(path)] == [0, 1]  # readers skip it

    async def again() -> frozenset[tuple[int, int]]:
        writer = await StudyWriter.open(path, header=header())
        writer.add(0, sample(2))
        await writer.aclose()
        return writer.done

    assert asyncio.run(again()) == {(0, 0), (0, 1)}
    assert path.read_bytes().startswith(whole) and path.read_bytes().count(b"\n") == 4  # header + 3 whole lines
    assert [r.seed for r in load_study(path)[0]] == [0, 1, 2]


KILLED_WRITER = """
import asyncio, sys
sys.path.insert(0, {tests!r})
from test_study_file import header, sample
from fw_rollouts._study_file import StudyWriter

async def main():
    writer = await StudyWriter.open({path!r}, header=header(), batch=7, part_rows=50, part_interval=0.05)
    print("open", flush=True)
    seed = 0
    while True:
        writer.add(seed % 2, sample(seed, tokens=40))
        seed += 1
        if seed % 20 == 0:
            # A producer that waits now and then, as a run waits on its requests: a loop that never
            # lets go of the GIL starves the writer's thread (a run holds back on writer.backlog).
            await asyncio.sleep(0.001)

asyncio.run(main())
"""


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_study_killed_mid_write_leaves_whole_entries_and_resumes(tmp_path: Path, fmt: str) -> None:
    path = path_for(tmp_path, fmt)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    script = KILLED_WRITER.format(tests=str(REPO_ROOT / "tests"), path=str(path))
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env)
    assert process.stdout is not None and process.stdout.readline() == b"open\n"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(list(read_samples(path))) < 300:
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stdout.close()
    on_disk = [(i, r.seed) for i, r in read_samples(path)]
    assert len(on_disk) >= 300

    async def again() -> frozenset[tuple[int, int]]:
        writer = await StudyWriter.open(path, header=header())
        for seed in range(len(on_disk) + 50):
            writer.add(seed % 2, sample(seed, tokens=40))
        await writer.aclose()
        return writer.done

    assert len(set(on_disk)) == len(on_disk) and asyncio.run(again()) == set(on_disk)
    back = load_study(path)
    seeds = sorted(r.seed or 0 for r in back[0]) + sorted(r.seed or 0 for r in back[1])
    assert sorted(seeds) == list(range(len(on_disk) + 50))
    assert back[0][0] == sample(0, tokens=40)
    if fmt == "parquet":
        assert not [name for name in os.listdir(path) if name.endswith(".tmp")]  # debris of the kill removed


# -- refusals ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_file_of_another_study_is_refused_with_what_to_do(tmp_path: Path, fmt: str) -> None:
    path = path_for(tmp_path, fmt)
    asyncio.run(write(path, [(0, sample(0))]))
    with pytest.raises(ValidationError) as info:
        asyncio.run(StudyWriter.open(path, header=header(study="study-2")))
    message = str(info.value)
    assert info.value.argument == "output" and str(path) in message
    assert "another study" in message and "new path" in message and "delete" in message
    assert [r.seed for _, r in read_samples(path)] == [0]  # untouched


@pytest.mark.parametrize(
    ("content", "mentions"),
    [
        (b"", None),  # empty: a new study
        (b"hello world\n", "line 1 is not JSON"),
        (b'{"format": "fw_rollouts.rollouts", "version": 1, "rollouts": {}}\n', "not format"),
        (b'{"format": "fw_rollouts.study", "version": 7, "study": "study-1", "items": []}\n', "version 7"),
        (b'{"format": "fw_rollouts.study", "version": 1, "study": "study-1"}\n', "lacks"),
        (b"\x00\x01binary", "first line"),
    ],
    ids=["empty", "text", "rollouts file", "future version", "no items", "binary"],
)
def test_a_file_that_is_not_a_study_file_is_refused(tmp_path: Path, content: bytes, mentions: str | None) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(content)
    if mentions is None:
        asyncio.run(write(path, [(0, sample(0))]))
        assert [r.seed for _, r in read_samples(path)] == [0]
        return
    with pytest.raises(ValidationError) as info:
        asyncio.run(StudyWriter.open(path, header=header()))
    assert info.value.argument == "output" and mentions in str(info.value) and str(path) in str(info.value)
    assert path.read_bytes() == content  # untouched
    with pytest.raises(ValidationError) as read_info:
        list(read_samples(path))
    assert read_info.value.argument == "path" and mentions in str(read_info.value)


def test_a_damaged_line_in_the_middle_is_named(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    asyncio.run(write(path, [(0, sample(0)), (0, sample(1))]))
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + b'{"item": 0, "resp\n' + lines[2])
    with pytest.raises(ValidationError, match="line 2 is not a sample") as info:
        asyncio.run(StudyWriter.open(path, header=header()))
    assert info.value.argument == "output" and "delete" in str(info.value)
    with pytest.raises(ValidationError, match="line 2 is not a sample"):
        load_study(path)
    path.write_bytes(lines[0] + b'{"item": 5, "response": {"seed": 1}}\n')  # an item the header does not have
    with pytest.raises(ValidationError, match="item 5 is not an index"):
        list(read_samples(path))


def test_parquet_directories_that_are_not_studies_are_refused(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    a_file = tmp_path / "file.parquet"
    a_file.write_bytes(b"PAR1 not really")
    with pytest.raises(ValidationError, match="is a file") as info:
        asyncio.run(StudyWriter.open(a_file, header=header()))
    assert info.value.argument == "output"
    other = tmp_path / "other.parquet"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ValidationError, match="other files"):
        asyncio.run(StudyWriter.open(other, header=header()))
    with pytest.raises(ValidationError, match=f"without {HEADER_NAME}"):
        load_study(other)
    study = tmp_path / "s.parquet"
    asyncio.run(write(study, [(0, sample(0))]))
    (study / "part-000001.parquet").write_bytes(b"garbage, not parquet")
    with pytest.raises(ValidationError, match=r"part-000001\.parquet cannot be read") as info:
        asyncio.run(StudyWriter.open(study, header=header()))
    assert info.value.argument == "output" and "delete that part" in str(info.value)
    with pytest.raises(ValidationError, match=r"part-000001\.parquet cannot be read"):
        load_study(study)


def test_bad_arguments_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as info:
        study_format(tmp_path / "s.csv")
    assert info.value.argument == "output" and ".jsonl" in str(info.value) and ".parquet" in str(info.value)
    with pytest.raises(ValidationError) as info:
        study_format(tmp_path / "s.jsonl", "csv")
    assert info.value.argument == "format" and "'jsonl' or 'parquet'" in str(info.value)
    assert study_format(tmp_path / "s.data", "jsonl") == "jsonl" and study_format(tmp_path / "S.JSONL") == "jsonl"
    bads: list[dict[str, Any]] = [
        {"items": []},
        {"study": "s"},
        {"study": "s", "items": [1]},
        {"study": "s", "items": [], "version": 2},
        {"study": "s", "items": [{"x": float("nan")}]},
    ]
    for bad in bads:
        with pytest.raises(ValidationError) as info:
            asyncio.run(StudyWriter.open(tmp_path / "h.jsonl", header=bad))
        assert info.value.argument == "header"
    assert not (tmp_path / "h.jsonl").exists()

    async def adds() -> None:
        async with await StudyWriter.open(tmp_path / "a.jsonl", header=header(items=2)) as writer:
            with pytest.raises(ValueError, match="item 2 is not an index"):
                writer.add(2, sample(0))
            with pytest.raises(ValueError, match="integer seed"):
                writer.add(0, FwResponse(full="x"))
        with pytest.raises(RuntimeError, match="closed"):
            writer.add(0, sample(0))

    asyncio.run(adds())


def test_parquet_without_pyarrow_names_the_extra(tmp_path: Path) -> None:
    # A real interpreter where pyarrow cannot be imported (sys.modules[name] = None makes import fail).
    script = textwrap.dedent(f"""
        import asyncio, sys
        sys.modules["pyarrow"] = None
        sys.modules["pyarrow.parquet"] = None
        from fw_rollouts import ConfigurationError
        from fw_rollouts._study_file import StudyWriter, study_format
        try:
            study_format({str(tmp_path / "s.parquet")!r})
        except ConfigurationError as exc:
            print("format:", exc)
        try:
            asyncio.run(StudyWriter.open({str(tmp_path / "t.jsonl")!r}, header={{"study": "s", "items": []}},
                                         format="parquet"))
        except ConfigurationError as exc:
            print("open:", exc)
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["format", "open"], out
    assert all("pip install 'fw-rollouts[parquet]'" in line for line in lines)
    assert not (tmp_path / "t.jsonl").exists() and not (tmp_path / "s.parquet").exists()
    assert issubclass(ConfigurationError, ValueError)


# -- the event loop and memory ----------------------------------------------------------------------------------


def test_concurrent_adds_from_many_tasks_all_arrive_once(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    items, per_item = 20, 60

    async def main() -> None:
        writer = await StudyWriter.open(path, header=header(items=items), batch=16, interval=0.001)

        async def producer(item: int) -> None:
            for seed in range(per_item):
                writer.add(item, sample(seed, text=f"{item}-{seed}"))
                if seed % 7 == item % 7:
                    await asyncio.sleep(0.0005 * (item % 3))

        await asyncio.gather(*(producer(item) for item in range(items)))
        await writer.drain()
        assert writer.backlog == 0 and writer.pending == 0
        await writer.aclose()

    asyncio.run(main())
    back = load_study(path)
    for item, rollouts in enumerate(back):
        assert [r.full for r in rollouts] == [f"{item}-{seed}" for seed in range(per_item)]
    assert path.read_bytes().count(b"\n") == 1 + items * per_item  # each exactly once


def test_add_never_makes_the_loop_wait_for_the_disk(tmp_path: Path) -> None:
    big = [sample(seed, tokens=200) for seed in range(128)]
    # Baseline, same run: what encoding and writing one batch costs when done on the loop itself.
    started = time.perf_counter()
    with open(tmp_path / "baseline.jsonl", "w") as out:
        out.write("".join(json.dumps({"item": 0, "response": response_to_dict(r)}) + "\n" for r in big))
    batch_cost = time.perf_counter() - started

    async def main() -> list[float]:
        writer = await StudyWriter.open(tmp_path / "s.jsonl", header=header(items=1), batch=len(big))
        costs, backlog = [], 0
        for n in range(3 * len(big)):
            response = dataclasses.replace(big[n % len(big)], seed=n)
            t = time.perf_counter()
            writer.add(0, response)
            costs.append(time.perf_counter() - t)
            backlog = max(backlog, writer.backlog)
            await asyncio.sleep(0)
        await writer.aclose()
        assert backlog >= 1 and writer.backlog == 0  # batches were in the writer's hands while the loop went on
        return costs

    costs = sorted(asyncio.run(main()))
    assert len(list(read_samples(tmp_path / "s.jsonl"))) == 3 * len(big)
    # A whole batch is written off the loop; the loop only queues (a GIL switch can still cost a few ms).
    assert costs[len(costs) // 2] < batch_cost / 100, (costs[len(costs) // 2], batch_cost)
    assert costs[-1] < batch_cost / 4, (costs[-1], batch_cost)


def test_a_100k_line_study_streams_back_in_flat_memory(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    lines = 100_000
    with open(path, "w", encoding="ascii") as out:  # written directly: the writer is not what is measured here
        out.write(json.dumps({"format": "fw_rollouts.study", "version": 1, **header(items=10)}) + "\n")
        # Without logprobs: building Logprobs costs most of a read and is not what this test is about.
        bare = FwResponse(full="some text " * 8, content="some text " * 8, seed=0, usage=Usage(3, 4, 7))
        template = json.dumps({"item": 0, "response": response_to_dict(bare)})
        for seed in range(lines):
            out.write(template.replace('"item": 0', f'"item": {seed % 10}').replace('"seed": 0', f'"seed": {seed}'))
            out.write("\n")
    size = path.stat().st_size
    tracemalloc.start()
    try:
        count, last = 0, None
        for _, last in read_samples(path):  # noqa: B007 (the last one is checked below)
            count += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == lines and last is not None and last.seed == lines - 1
    # One line and its sample at a time: nothing grows with the file.
    assert peak < 256 * 1024 and size > 40_000_000, (peak, size)
