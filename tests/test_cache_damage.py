"""A damaged or unusable cache: a miss, never wrong data; the work goes on, with one warning naming the path.

Real files and real SQLite throughout: bytes flipped in a real ``cache.db``, a truncated or garbage database,
a read-only bind mount and a full tmpfs where the test may mount them (root; skipped otherwise, and the same
behaviour is reached without mounting through file permissions for other users, an explicitly read-only store
and SQLite's own page limit), a cache directory deleted under a running client. Samples come from the simulator
over loopback HTTP; the simulator is deterministic, so a sample fetched again equals the one first stored except
for its response id and creation time.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from _helpers import MakeClient
from fw_rollouts import AsyncFireworks, DiskStore, FwResponse, FwRollouts, StoreStats
from fw_rollouts.testing import Fault, FireworksSimulator

PROMPT = "Tell me about the sea."
N = 16
# echo_once off: every record holds a whole sample (the prompt part's own record is tested apart below).
OPTIONS: dict[str, Any] = {"logprobs": 3, "echo": True, "max_tokens": 12, "echo_once": False}
VOLATILE = ("response_id", "created")  # what a sample fetched again does not share with the first fetch


# -- helpers ---------------------------------------------------------------------------------------------------


def view(sample: FwResponse) -> dict[str, Any]:
    """Every field of a sample, its logprobs' lazily unpacked columns included (reading them is the point)."""
    fields = sample.to_dict()
    del fields["cached"]
    lp = sample.logprobs
    assert lp is not None
    fields["views"] = (
        lp.tokens,
        lp.token_logprobs,
        lp.top_logprobs,
        lp.text_offset,
        lp.token_ids,
        lp.sampling_logprobs,
        lp.num_prompt_tokens,
        lp.prompt_length,
        lp.echo,
        lp.sum(),
        lp.get_prompt_logprobs().tokens,
        lp.get_generation_logprobs().token_logprobs,
    )
    return fields


def stable(fields: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if name not in VOLATILE}


def check(rollouts: FwRollouts, reference: dict[int, dict[str, Any]]) -> int:
    """Every sample is there and is either the stored original, exactly (a hit), or a refetch of it; the hits."""
    assert [r.seed for r in rollouts] == sorted(reference)
    hits = 0
    for sample in rollouts:
        assert sample.seed is not None
        fields, original = view(sample), reference[sample.seed]
        if sample.cached:
            assert fields == original, f"seed {sample.seed}: a cache hit that is not the sample stored"
            hits += 1
        else:
            assert stable(fields) == stable(original), f"seed {sample.seed}: a refetch that differs"
    return hits


def cache_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("fw_")]


def no_noise(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    """Nothing left unretrieved, nothing on stderr, no error logged (after the garbage is collected)."""
    gc.collect()
    err = capfd.readouterr().err
    assert "never retrieved" not in err and "Traceback" not in err, err
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]


@contextlib.contextmanager
def bystander(directory: Path) -> Iterator[sqlite3.Connection]:
    """A plain SQLite connection to a cache's database, as any other program would open it, closed after.

    (Read-write: closing the last connection removes the -wal and -shm files, which a read-only one leaves.)
    """
    connection = sqlite3.connect(directory / "cache.db")
    try:
        yield connection
    finally:
        connection.close()


def entries(directory: Path) -> int:
    """How many entries a cache directory holds (0 without a database)."""
    if not (directory / "cache.db").exists():
        return 0
    with bystander(directory) as connection:
        ((count,),) = connection.execute("SELECT count(*) FROM Cache").fetchall()
    return int(count)


def stored_records(directory: Path) -> dict[str, bytes]:
    with bystander(directory) as connection:
        return dict(connection.execute("SELECT key, value FROM Cache"))


async def on_worker(store: DiskStore, pragma: Callable[[int], str]) -> None:
    """Run ``pragma(page count)`` on the store's own SQLite connection, on its worker thread (where it lives)."""

    def apply() -> None:
        assert store._handle is not None and store._handle.connection is not None
        connection = store._handle.connection
        ((pages,),) = connection.execute("PRAGMA page_count").fetchall()
        connection.execute(pragma(pages))

    await asyncio.get_running_loop().run_in_executor(store._executor, apply)


async def generate(client: AsyncFireworks, n: int = N, seed: int = 0) -> FwRollouts:
    return await client.generate(PROMPT, n_samples=n, seed=seed)


def run_one(make_client: MakeClient, directory: Path, n: int = N, **options: Any) -> FwRollouts:
    async def main() -> FwRollouts:
        async with make_client(cache_dir=str(directory), **{**OPTIONS, **options}) as client:
            return await generate(client, n)

    return asyncio.run(main())


@pytest.fixture
def original(make_client: MakeClient, tmp_path: Path) -> tuple[Path, dict[int, dict[str, Any]]]:
    """A closed cache directory holding N samples, and every field of each."""
    directory = tmp_path / "original"
    rollouts = run_one(make_client, directory)
    assert not any(r.cached for r in rollouts) and entries(directory) == N
    return directory, {r.seed: view(r) for r in rollouts if r.seed is not None}


def copy_of(source: Path, target: Path, data: bytes | None = None) -> Path:
    """A copy of a cache directory, with ``data`` as its database if given."""
    shutil.copytree(source, target)
    if data is not None:
        (target / "cache.db").write_bytes(data)
    return target


# -- mounting (root only) --------------------------------------------------------------------------------------


def _mount(*args: str) -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting needs root and mount(8)")
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here: {done.stderr.strip()}")


def _unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextlib.contextmanager
def read_only_view(source: Path, target: Path) -> Iterator[Path]:
    """``source`` seen through a read-only bind mount at ``target``: a real read-only file system."""
    target.mkdir(exist_ok=True)
    _mount("--bind", str(source), str(target))
    try:
        _mount("-o", "remount,bind,ro", str(target))
        assert not os.access(target, os.W_OK)  # even for root
        yield target
    finally:
        _unmount(target)


@contextlib.contextmanager
def small_disk(target: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``target``: a disk that really fills up."""
    target.mkdir(exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target))
    try:
        yield target
    finally:
        _unmount(target)


# -- a damaged entry -------------------------------------------------------------------------------------------


def record_offsets(directory: Path) -> list[tuple[int, int]]:
    """(offset, length) in cache.db of each stored record that sits whole in one page."""
    data = (directory / "cache.db").read_bytes()
    found = []
    for record in stored_records(directory).values():
        offset = data.find(record)
        if offset >= 0:
            found.append((offset, len(record)))
    return found


def test_flipped_bytes_in_records_are_misses_refetched_and_overwritten(
    make_client: MakeClient,
    original: tuple[Path, dict[int, dict[str, Any]]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    source, reference = original
    records = record_offsets(source)
    assert len(records) == N  # each record is whole in one page, so a flip lands in exactly one record
    clean = (source / "cache.db").read_bytes()
    # In each trial half the records get one damaged byte, each at its own relative position (magic, version,
    # flags, key tag, the fixed fields, the text, the logprobs, the CRC), with a one-bit, a high-bit or a
    # whole-byte flip; the other half must be served exactly as stored.
    for trial in range(24):
        data = bytearray(clean)
        damaged = 0
        for i, (offset, length) in enumerate(records):
            if (i + trial) % 2:
                continue
            relative = (trial * 37 + i * 101) % length if trial > 3 else (0, 4, 6, length - 1)[trial]
            data[offset + relative] ^= (0x01, 0x80, 0xFF)[(i + trial) % 3]
            damaged += 1
        directory = copy_of(source, tmp_path / f"t{trial}", bytes(data))
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            first = run_one(make_client, directory)
        hits = check(first, reference)
        assert hits == N - damaged
        (warning,) = cache_warnings(caplog)  # one per call, counting them
        assert f"{damaged} cache entries in {directory} could not be read and are fetched again" in warning
        again = run_one(make_client, directory)  # overwritten: every sample is a hit now, exactly as last fetched
        assert check(again, {r.seed: view(r) for r in first if r.seed is not None}) == N


def test_a_damaged_prompt_record_makes_its_samples_misses_never_wrong(
    make_client: MakeClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With echo paid once, the prompt's positions live in one record of their own; damage there must not
    give any sample another prompt part or a broken one: its samples are fetched again, and stored again."""
    source = tmp_path / "echo-once"
    reference = {r.seed: view(r) for r in run_one(make_client, source, echo_once=True) if r.seed is not None}
    assert entries(source) == N + 1  # the samples' generated positions, and the prompt part once
    (record,) = [value for value in stored_records(source).values() if value[:4] == b"FWPR"]
    clean = (source / "cache.db").read_bytes()
    offset, length = clean.find(record), len(record)
    assert offset >= 0, "the prompt record should sit whole in one page"
    for trial, relative in enumerate((0, 4, 6, 9, length // 3, length // 2, length - 5, length - 1)):
        data = bytearray(clean)
        data[offset + relative] ^= (0x01, 0x80, 0xFF)[trial % 3]
        directory = copy_of(source, tmp_path / f"p{trial}", bytes(data))
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            first = run_one(make_client, directory, echo_once=True)
        assert check(first, reference) == 0  # none served from the cache, all fetched again...
        (warning,) = cache_warnings(caplog)
        assert "could not be read" in warning
        again = run_one(make_client, directory, echo_once=True)  # ...and stored again, prompt record included
        assert check(again, {r.seed: view(r) for r in first if r.seed is not None}) == N


def test_a_damaged_index_never_serves_another_keys_record(
    make_client: MakeClient,
    original: tuple[Path, dict[int, dict[str, Any]]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A flipped rowid in the (key -> row) index hands back another sample's intact record; the key tag refuses it.

    (Record format 1, checked by its CRC alone, served such a record as the sample asked for.)
    """
    source, reference = original
    with bystander(source) as connection:
        ((root,),) = connection.execute("SELECT rootpage FROM sqlite_master WHERE name = 'Cache_key_raw'").fetchall()
        ((page_size,),) = connection.execute("PRAGMA page_size").fetchall()
        keys = [key for (key,) in connection.execute("SELECT key FROM Cache")]
    clean = (source / "cache.db").read_bytes()
    page = slice((root - 1) * page_size, root * page_size)
    # An index cell is (key, raw, rowid): raw = 1 takes no bytes, and a small rowid is the one byte after the key.
    rowid_bytes = [page.start + clean[page].find(key.encode()) + len(key) for key in keys]
    assert all(clean[page].find(key.encode()) >= 0 for key in keys)
    swapped = 0
    for trial, position in enumerate(rowid_bytes[:8]):
        data = bytearray(clean)
        data[position] ^= 0x01  # the row next to it: another key's record, intact (or no row: a plain miss)
        directory = copy_of(source, tmp_path / f"t{trial}", bytes(data))
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            first = run_one(make_client, directory)
        check(first, reference)
        swapped += any("written under another key" in w for w in cache_warnings(caplog))
        check(
            run_one(make_client, directory),
            {**reference, **{r.seed: view(r) for r in first if not r.cached and r.seed is not None}},
        )
    assert swapped >= 6  # most flips pointed a key at a record not its own, and none was served


def test_bytes_flipped_anywhere_in_the_database_never_give_wrong_data_or_an_error(
    make_client: MakeClient,
    original: tuple[Path, dict[int, dict[str, Any]]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every 1024th byte of the file in turn (header, schema, settings, table and index pages, free pages)."""
    source, reference = original
    clean = (source / "cache.db").read_bytes()
    set_aside = 0
    for position in range(0, len(clean), 1024):
        data = bytearray(clean)
        data[position] ^= 0xFF
        directory = copy_of(source, tmp_path / f"p{position}", bytes(data))
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            check(run_one(make_client, directory), reference)  # all there, none wrong, and no exception
        warnings = cache_warnings(caplog)
        assert len(warnings) <= 2, warnings  # the database set aside, entries unreadable: each said once
        set_aside += any("moved it to" in w for w in warnings)
    assert set_aside > 0


# -- a damaged database file -----------------------------------------------------------------------------------


def _one_set_aside(directory: Path, caplog: pytest.LogCaptureFixture) -> Path:
    """The one file the store moved aside, after checking its warning names both paths."""
    (aside,) = directory.glob("cache.db.corrupt-*[!lm]")  # not its -wal or -shm
    (warning,) = [w for w in cache_warnings(caplog) if "moved it to" in w]
    assert f"{directory / 'cache.db'} is damaged" in warning and str(aside) in warning
    return aside


@pytest.mark.parametrize(
    "damage",
    ["garbage", "truncated header", "truncated half", "garbage page"],
)
def test_a_damaged_database_is_set_aside_and_a_new_one_started(
    make_client: MakeClient,
    original: tuple[Path, dict[int, dict[str, Any]]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    damage: str,
) -> None:
    source, reference = original
    clean = (source / "cache.db").read_bytes()
    data = {
        "garbage": os.urandom(len(clean)),  # not SQLite at all: "file is not a database"
        "truncated header": clean[:60],
        "truncated half": clean[: len(clean) // 2],  # opens; a query meets a missing page: "malformed"
        # The header and schema intact, one page of the table overwritten: the open works, the query fails.
        "garbage page": clean[: 4 * 4096] + b"\xa5" * 4096 + clean[5 * 4096 :],
    }[damage]
    directory = copy_of(source, tmp_path / "c", data)
    with caplog.at_level(logging.WARNING):
        first = run_one(make_client, directory)
    assert check(first, reference) == 0  # every sample, fetched again
    aside = _one_set_aside(directory, caplog)
    if damage in ("garbage", "truncated header"):  # refused on opening: kept exactly as it was, for whoever looks
        assert aside.read_bytes() == data
    assert entries(directory) == N  # the new database holds what was fetched
    assert all(r.cached for r in run_one(make_client, directory))
    no_noise(caplog, capfd)


def test_a_database_damaged_under_an_open_store_is_set_aside(
    original: tuple[Path, dict[int, dict[str, Any]]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The damage appears while the store is open: the next query fails (raw sqlite3.DatabaseError before)."""
    source, _ = original
    directory = copy_of(source, tmp_path / "c")
    keys = list(stored_records(directory))

    async def main() -> tuple[list[bytes | None], list[bytes | None]]:
        async with DiskStore(directory) as store:
            before = await store.get_many(keys)
            size = (directory / "cache.db").stat().st_size
            with open(directory / "cache.db", "r+b") as file:  # another program scribbles over the pages
                file.seek(4096)
                file.write(b"\xa5" * (size - 4096))
            await store.set_many([("new", b"x")])  # a write starts a new transaction: SQLite reads the pages again
            return before, await store.get_many([*keys, "new"])

    with caplog.at_level(logging.WARNING):
        before, after = asyncio.run(main())
    assert None not in before
    assert after == [None] * len(keys) + [b"x"]  # the new database holds what was written after
    _one_set_aside(directory, caplog)


def test_no_sqlite_error_leaves_the_store(tmp_path: Path) -> None:
    """Whatever the store cannot do, it raises our ConfigurationError naming the database, never sqlite3's."""
    from fw_rollouts import ConfigurationError

    directory = tmp_path / "c"

    async def main() -> None:
        async with DiskStore(directory) as store:
            await store.set_many([("a", b"1")])
            connection = sqlite3.connect(directory / "cache.db", timeout=0)
            connection.execute("BEGIN EXCLUSIVE")  # held by another process, for longer than the store waits
            try:
                await on_worker(store, lambda _: "PRAGMA busy_timeout = 10")  # 10 ms, not the two minutes
                with pytest.raises(ConfigurationError, match=f"cannot write to the cache database {directory}.*locked"):
                    await store.set_many([("b", b"2")])
            finally:
                connection.rollback()
                connection.close()
            await store.set_many([("b", b"2")])
            assert await store.get_many(["a", "b"]) == [b"1", b"2"]

    asyncio.run(main())


class DownStore:
    """A cache backend that is down (a Redis server gone, say): every call fails."""

    location = "redis://cache.example:6379/0"

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        raise ConnectionRefusedError(111, "Connection refused")

    async def set_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    async def stats(self) -> StoreStats:
        raise ConnectionRefusedError(111, "Connection refused")

    async def aclose(self) -> None:
        pass


def test_a_store_that_fails_is_an_empty_one(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    async def main() -> FwRollouts:
        async with make_client(cache=DownStore(), **OPTIONS) as client:
            return await generate(client)

    with caplog.at_level(logging.WARNING):
        rollouts = asyncio.run(main())
    assert len(rollouts) == N and not any(r.cached for r in rollouts)
    read, write = cache_warnings(caplog)  # one for the lookup, one for the write-behind
    assert f"could not read the cache at {DownStore.location} (ConnectionRefusedError: " in read
    assert f"fetching all {N} samples" in read
    assert f"could not write {N} samples to the cache at {DownStore.location}" in write
    no_noise(caplog, capfd)


# -- a read-only cache -----------------------------------------------------------------------------------------


def _check_read_only_run(
    make_client: MakeClient,
    directory: Path,
    reference: dict[int, dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
    *,
    cache: DiskStore | None = None,
) -> list[str]:
    """A call for twice the stored samples on a read-only cache: the stored ones are hits, the rest fetched, none
    stored; the warnings."""
    before = {p.name: p.read_bytes() for p in directory.iterdir()}

    async def main() -> tuple[FwRollouts, FwRollouts]:
        options: dict[str, Any] = {"cache": cache} if cache is not None else {"cache_dir": str(directory)}
        async with make_client(**options, **OPTIONS) as client:
            return await generate(client, 2 * N), await generate(client, 2 * N)

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        first, second = asyncio.run(main())
    for rollouts in (first, second):
        assert [r.cached for r in rollouts] == [True] * N + [False] * N
        assert all(view(r) == reference[r.seed] for r in rollouts[:N] if r.seed is not None)
    after = {p.name: p.read_bytes() for p in directory.iterdir()}
    assert after["cache.db"] == before["cache.db"]  # not a byte written
    # SQLite's own -shm index (which any reader makes where it can), and an empty -wal: nothing else.
    assert set(after) - set(before) <= {"cache.db-shm", "cache.db-wal"} and not after.get("cache.db-wal")
    return cache_warnings(caplog)


def test_an_explicitly_read_only_store_serves_hits_and_stores_nothing(
    make_client: MakeClient,
    original: tuple[Path, dict[int, dict[str, Any]]],
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    directory, reference = original
    store = DiskStore(directory, read_only=True)
    assert "read-only" in repr(store)
    assert _check_read_only_run(make_client, directory, reference, caplog, cache=store) == []  # asked for: no warning
    store.close()
    no_noise(caplog, capfd)


def test_a_read_only_store_creates_nothing(tmp_path: Path) -> None:
    from fw_rollouts import ConfigurationError

    with pytest.raises(ConfigurationError, match="does not exist"):
        DiskStore(tmp_path / "nowhere", read_only=True)
    assert not (tmp_path / "nowhere").exists()


def test_a_read_only_mount(
    make_client: MakeClient,
    original: tuple[Path, dict[int, dict[str, Any]]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A real read-only file system (a bind mount), even for root; the database was closed cleanly, so there
    is no -wal nor -shm beside it and SQLite cannot create them (the store reads it as immutable)."""
    source, reference = original
    assert sorted(p.name for p in source.iterdir()) == ["cache.db"]
    with read_only_view(source, tmp_path / "ro") as directory:
        warnings = _check_read_only_run(make_client, directory, reference, caplog)
    (warning,) = warnings  # one warning for the two calls
    assert f"the cache at {directory} cannot be written (read-only file system)" in warning
    assert "served" in warning and "not stored" in warning
    no_noise(caplog, capfd)


def test_a_read_only_mount_of_a_cache_being_written(
    make_client: MakeClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A writer (another client, on the writable path) keeps the database open, -wal and -shm beside it: a reader
    on a read-only mount of the directory reads through them, and sees the writer's newest entries too."""
    source = tmp_path / "echo-once"

    async def main() -> None:
        async with make_client(cache_dir=str(source), **OPTIONS) as writer:
            await generate(writer, N)
            assert (source / "cache.db-wal").exists()
            with read_only_view(source, tmp_path / "ro") as directory:
                async with make_client(cache_dir=str(directory), **OPTIONS) as reader:
                    assert all(r.cached for r in await generate(reader, N))
                    await generate(writer, N, seed=N)  # written after the reader opened the database
                    seen = await generate(reader, 2 * N)
                    assert all(r.cached for r in seen)
                    assert len(await generate(reader, 1, seed=2 * N)) == 1  # a miss: fetched, not stored

    with caplog.at_level(logging.WARNING):
        asyncio.run(main())
    (warning,) = cache_warnings(caplog)
    assert "cannot be written (read-only file system)" in warning
    assert entries(source) == 2 * N


def test_a_directory_and_database_without_write_permission(
    make_client: MakeClient,
    original: tuple[Path, dict[int, dict[str, Any]]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What a shared dataset owned by someone else looks like to a user (root is not stopped by permissions: the
    mount tests above cover root)."""
    directory, reference = original
    directory.chmod(0o555)
    (directory / "cache.db").chmod(0o444)
    try:
        if os.access(directory, os.W_OK):
            pytest.skip("running as a user (root) whom permissions do not stop; see test_a_read_only_mount")
        (warning,) = _check_read_only_run(make_client, directory, reference, caplog)
        assert f"the cache at {directory} cannot be written (permission denied" in warning
    finally:
        directory.chmod(0o755)
        (directory / "cache.db").chmod(0o644)


def test_a_read_only_directory_without_a_database(
    make_client: MakeClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with read_only_view(empty, tmp_path / "ro") as directory, caplog.at_level(logging.WARNING):
        assert len(run_one(make_client, directory)) == N
    (warning,) = cache_warnings(caplog)
    assert f"the cache at {directory} cannot be written (read-only file system) and holds no cache database" in (
        warning
    )


# -- a full disk -----------------------------------------------------------------------------------------------


def _uncached(warning: str) -> int:
    assert "could not write " in warning and "(they are returned, just not cached)" in warning
    return int(warning.split("could not write ")[1].split()[0])


def test_a_full_database_mid_run(
    make_client: MakeClient, tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """SQLite's page limit makes it fail as a full disk does (SQLITE_FULL, "database or disk is full")."""
    directory = tmp_path / "c"
    n = 600

    async def main() -> FwRollouts:
        async with make_client(cache_dir=str(directory), **OPTIONS) as client:
            await generate(client, 1, seed=10_000)  # opens the database
            store = client._services.store.get()
            assert isinstance(store, DiskStore)
            await on_worker(store, lambda pages: f"PRAGMA max_page_count = {pages + 40}")  # a few batches' room
            return await generate(client, n)

    with caplog.at_level(logging.WARNING):
        rollouts = asyncio.run(main())
    assert len(rollouts) == n and not any(r.cached for r in rollouts)  # every sample returned
    (warning,) = cache_warnings(caplog)
    assert f"at {directory} " in warning and f"{directory / 'cache.db'}: database or disk is full" in warning
    stored = entries(directory) - 1
    assert 0 < stored < n and _uncached(warning) == n - stored  # the count is exact
    no_noise(caplog, capfd)


def test_a_full_disk_mid_run(
    make_client: MakeClient, tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """A real full file system: a 512 KiB tmpfs, and 1,000 samples of about 1 KiB each."""
    n = 1000
    with small_disk(tmp_path / "small", "512k") as directory:
        with caplog.at_level(logging.WARNING):
            rollouts = run_one(make_client, directory, n)
        assert len(rollouts) == n
        (warning,) = cache_warnings(caplog)
        assert f"at {directory} " in warning
        assert "database or disk is full" in warning or "No space left on device" in warning
        stored = entries(directory)
        assert 0 < stored < n and _uncached(warning) == n - stored
        no_noise(caplog, capfd)


def test_a_disk_already_full(
    make_client: MakeClient, tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """No room even for a new database: every sample fetched, one warning (a ConfigurationError before)."""
    with small_disk(tmp_path / "small", "64k") as directory:
        with open(directory / "filler", "wb", buffering=0) as filler, contextlib.suppress(OSError):
            while True:
                filler.write(b"\0" * 4096)
        with caplog.at_level(logging.WARNING):
            first = run_one(make_client, directory)
        assert len(first) == N and not any(r.cached for r in first)
        (warning,) = cache_warnings(caplog)
        assert f"the cache at {directory} cannot be written" in warning
        no_noise(caplog, capfd)


# -- a directory deleted under a running client -----------------------------------------------------------------


def test_a_directory_deleted_between_calls_is_recreated(
    make_client: MakeClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "c"

    async def main() -> list[FwRollouts]:
        async with make_client(cache_dir=str(directory), **OPTIONS) as client:
            first = await generate(client)
            shutil.rmtree(directory)
            second = await generate(client, seed=N)  # stored in a new directory
            third = await generate(client, 2 * N)
            return [first, second, third]

    with caplog.at_level(logging.WARNING):
        first, second, third = asyncio.run(main())
    assert not any(r.cached for r in [*first, *second])
    assert [r.cached for r in third] == [False] * N + [True] * N  # the deleted ones fetched again; the rest hits
    (warning,) = cache_warnings(caplog)
    assert f"the cache database {directory / 'cache.db'} was removed while in use" in warning
    assert "started a new one" in warning
    assert entries(directory) == 2 * N  # on disk once the client is closed: nothing lost after the deletion


def test_a_directory_deleted_during_a_call_keeps_what_comes_after(
    sim: FireworksSimulator, make_client: MakeClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "c"
    n, early, hold = 40, 10, 25
    # One request at a time: request `early` is answered late enough for the samples before it to be written, and
    # request `hold` is held while the test deletes the directory.
    sim.faults.push(*[Fault.ok()] * (early - 1), Fault.slow(0.2), *[Fault.ok()] * (hold - early - 1), Fault.slow(0.6))

    async def main() -> tuple[FwRollouts, int]:
        async with make_client(cache_dir=str(directory), max_concurrency=1, **OPTIONS) as client:
            call = asyncio.ensure_future(generate(client, n))
            while len([r for r in sim.requests if r.path.endswith("/completions")]) < hold - 1:  # the held one next
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)  # the writes of what came before have landed
            deleted = entries(directory)
            shutil.rmtree(directory)
            return await call, deleted

    with caplog.at_level(logging.WARNING):
        rollouts, deleted = asyncio.run(main())
    assert len(rollouts) == n
    assert early <= deleted < hold
    (warning,) = cache_warnings(caplog)
    assert f"{directory / 'cache.db'} was removed while in use" in warning
    assert entries(directory) == n - deleted  # every sample that came after the deletion is stored
