"""DiskStore: the SampleStore protocol on diskcache, proved against diskcache's own public API both ways."""

from __future__ import annotations

import asyncio
import logging
import os
import pathlib
from collections.abc import Iterator, Sequence
from typing import Any

import diskcache
import pytest

from fw_rollouts import _diskcache_rows, _store
from fw_rollouts._exceptions import ConfigurationError
from fw_rollouts._store import DiskStore, SampleStore, StoreStats

ROW_LIMIT = 2**22  # values this big or bigger are files, not rows (the store's disk_min_file_size)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def key(i: int) -> str:
    return f"{i:064x}"


def value(i: int, size: int = 40) -> bytes:
    return (b"v%d-" % i * (size // 4 + 1))[:size]


@pytest.fixture(params=["raw SQL", "public API"])
def path(request: pytest.FixtureRequest, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """A cache directory; every test using it runs on the fast path and on the public-API fallback."""
    if request.param == "public API":
        monkeypatch.setattr(_store, "knows_layout", lambda connection: False)
    return tmp_path / "cache"


@pytest.fixture
def store(path: pathlib.Path) -> Iterator[DiskStore]:
    s = DiskStore(path)
    yield s
    s.close()


def reference(path: pathlib.Path) -> diskcache.Cache:
    """A fresh handle on the directory through diskcache's public API (default Disk, stored settings)."""
    return diskcache.Cache(str(path))


def set_many(store: DiskStore, items: Sequence[tuple[str, bytes]]) -> None:
    run(store.set_many(items))


def get_many(store: DiskStore, keys: Sequence[str]) -> list[bytes | None]:
    result: list[bytes | None] = run(store.get_many(keys))
    return result


def check_consistent(path: pathlib.Path, expected: dict[str, bytes]) -> None:
    """diskcache agrees on every entry, the count, the sizes, and that no value file is missing or left over."""
    with reference(path) as cache:
        assert cache.check() == []
        assert len(cache) == len(expected)
        assert sorted(cache.iterkeys()) == sorted(expected)
        for k, v in expected.items():
            assert cache.get(k) == v
        files = sum(len(v) for v in expected.values() if len(v) >= ROW_LIMIT)
        assert cache.reset("size") == files  # diskcache's running total of value-file bytes


class TestProtocol:
    def test_disk_store_is_a_sample_store(self, store: DiskStore) -> None:
        assert isinstance(store, SampleStore)
        assert store.location == str(store.location) and os.path.isabs(store.location)

    def test_the_path_under_test_is_the_one_in_use(self, store: DiskStore, request: pytest.FixtureRequest) -> None:
        get_many(store, [])
        assert store._handle is not None
        assert store._handle.fast is (request.node.callspec.params["path"] == "raw SQL")

    def test_location_is_the_absolute_directory(self, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.chdir(tmp_path)
        with_close = DiskStore("relative/dir")
        assert with_close.location == str(tmp_path / "relative" / "dir")
        assert (tmp_path / "relative" / "dir").is_dir()
        with_close.close()
        assert DiskStore(pathlib.Path("p")).location == str(tmp_path / "p")

    def test_stats(self, store: DiskStore, path: pathlib.Path) -> None:
        empty = run(store.stats())
        assert empty == StoreStats(entries=0, size_bytes=empty.size_bytes, location=str(path))
        assert empty.size_bytes is not None and empty.size_bytes > 0  # the database pages
        set_many(store, [(key(i), value(i)) for i in range(10)])
        assert run(store.stats()).entries == 10
        set_many(store, [(key(99), b"x" * ROW_LIMIT)])
        big = run(store.stats())
        assert big.entries == 11
        assert big.size_bytes is not None and big.size_bytes >= empty.size_bytes + ROW_LIMIT

    def test_stats_is_frozen(self) -> None:
        stats = StoreStats(entries=1, size_bytes=None, location="x")
        with pytest.raises(AttributeError):
            stats.entries = 2  # type: ignore[misc]

    def test_missing_keys_and_order(self, store: DiskStore) -> None:
        assert get_many(store, []) == []
        present = {key(i): value(i) for i in range(0, 1300, 3)}
        set_many(store, list(present.items()))
        keys = [key(i) for i in reversed(range(1300))] + [key(3), key(3)]  # more than one query's worth
        assert get_many(store, keys) == [present.get(k) for k in keys]

    def test_repeated_key_in_one_call_keeps_the_last(self, store: DiskStore, path: pathlib.Path) -> None:
        set_many(store, [(key(1), b"first"), (key(2), b"two"), (key(1), b"last")])
        assert get_many(store, [key(1), key(2)]) == [b"last", b"two"]
        check_consistent(path, {key(1): b"last", key(2): b"two"})

    def test_values_must_be_bytes(self, store: DiskStore, path: pathlib.Path) -> None:
        with pytest.raises(TypeError, match=r"\(str, bytes\)"):
            set_many(store, [(key(1), b"ok"), (key(2), "text")])  # type: ignore[list-item]
        check_consistent(path, {})

    def test_never_evicts(self, store: DiskStore, path: pathlib.Path) -> None:
        set_many(store, [(key(0), b"x")])
        with reference(path) as cache:
            assert cache.eviction_policy == "none"


class TestAgainstDiskcache:
    """Entries written one way read back the other, on the fast path and on the fallback alike."""

    def test_store_writes_diskcache_reads(self, store: DiskStore, path: pathlib.Path) -> None:
        items = {key(i): value(i, 10 + i) for i in range(50)}
        set_many(store, list(items.items()))
        check_consistent(path, items)

    def test_diskcache_writes_store_reads(self, store: DiskStore, path: pathlib.Path) -> None:
        get_many(store, [key(0)])  # the store creates the directory's settings first, as in use
        items = {key(i): value(i, 10 + i) for i in range(50)}
        with reference(path) as cache:
            for k, v in items.items():
                cache.set(k, v)
        assert get_many(store, list(items)) == list(items.values())
        assert run(store.stats()).entries == 50

    def test_diskcache_writes_first(self, path: pathlib.Path) -> None:
        with diskcache.Cache(str(path)) as cache:  # a directory diskcache made with its defaults
            cache.set(key(1), b"one")
            cache.set(key(2), b"x" * 100_000)  # a file under diskcache's default 32 KiB threshold
        store = DiskStore(path)
        assert get_many(store, [key(1), key(2), key(3)]) == [b"one", b"x" * 100_000, None]
        set_many(store, [(key(2), b"small now"), (key(3), b"three")])
        store.close()
        check_consistent(path, {key(1): b"one", key(2): b"small now", key(3): b"three"})

    @pytest.mark.parametrize("size", [ROW_LIMIT - 1, ROW_LIMIT, ROW_LIMIT + 1])
    def test_large_values_both_ways(self, store: DiskStore, path: pathlib.Path, size: int) -> None:
        big = os.urandom(size)
        set_many(store, [(key(1), big), (key(2), b"small")])
        check_consistent(path, {key(1): big, key(2): b"small"})
        with reference(path) as cache:
            cache.set(key(3), big[::-1])
        assert get_many(store, [key(1), key(2), key(3)]) == [big, b"small", big[::-1]]
        check_consistent(path, {key(1): big, key(2): b"small", key(3): big[::-1]})

    @pytest.mark.parametrize(
        ("old", "new"),
        [(10, 20), (10, ROW_LIMIT), (ROW_LIMIT, 10), (ROW_LIMIT, ROW_LIMIT + 5)],
        ids=["row-row", "row-file", "file-row", "file-file"],
    )
    @pytest.mark.parametrize("writer", ["store", "diskcache"])
    def test_overwrite(self, store: DiskStore, path: pathlib.Path, old: int, new: int, writer: str) -> None:
        others = {key(i): value(i) for i in range(5, 8)}
        if writer == "store":
            set_many(store, [(key(1), value(1, old)), *others.items()])
        else:
            get_many(store, [])
            with reference(path) as cache:
                for k, v in [(key(1), value(1, old)), *others.items()]:
                    cache.set(k, v)
        set_many(store, [(key(1), value(2, new)), (key(9), b"new key")])
        expected = {key(1): value(2, new), key(9): b"new key", **others}
        assert get_many(store, list(expected)) == list(expected.values())
        check_consistent(path, expected)  # one entry per key, count and size right, no orphaned file
        with reference(path) as cache:
            cache.set(key(1), value(3, old))  # and diskcache can overwrite what the store wrote
        assert get_many(store, [key(1)]) == [value(3, old)]
        check_consistent(path, {**expected, key(1): value(3, old)})

    def test_overwrite_clears_expiry_and_tag(self, store: DiskStore, path: pathlib.Path) -> None:
        get_many(store, [])
        with reference(path) as cache:
            cache.set(key(1), b"old", expire=3600, tag="t")
        set_many(store, [(key(1), b"new")])
        with reference(path) as cache:
            assert cache.get(key(1), expire_time=True, tag=True) == (b"new", None, None)

    def test_expired_entries_are_misses(self, store: DiskStore, path: pathlib.Path) -> None:
        get_many(store, [])
        with reference(path) as cache:
            cache.set(key(1), b"gone", expire=-1)
            cache.set(key(2), b"here")
        assert get_many(store, [key(1), key(2)]) == [None, b"here"]

    def test_values_that_are_not_bytes_are_misses(self, store: DiskStore, path: pathlib.Path) -> None:
        get_many(store, [])
        with reference(path) as cache:
            cache.set(key(1), "text")
            cache.set(key(2), 42)
            cache.set(key(3), {"a": 1})  # pickled by diskcache
            cache.set(key(5), b"bytes")
        with diskcache.Cache(str(path), disk_min_file_size=1000) as cache:
            cache.set(key(4), "t" * 100_000)  # a text file
        assert get_many(store, [key(i) for i in range(1, 6)]) == [None, None, None, None, b"bytes"]

    def test_a_pickled_value_is_never_loaded(self, store: DiskStore, path: pathlib.Path) -> None:
        target = path.parent / "ran"
        get_many(store, [])
        with reference(path) as cache:
            cache.set(key(1), Armed(target))
            cache.set(key(2), (Armed(target), b"x" * ROW_LIMIT))  # large enough for a file
        assert get_many(store, [key(1), key(2)]) == [None, None]
        assert not target.exists()
        with reference(path) as cache:
            cache.get(key(1))  # the value is armed: diskcache's own get does run it
        assert target.exists()

    def test_iter_rows_lists_what_read_rows_reads(self, store: DiskStore, path: pathlib.Path) -> None:
        # The listing of `fw-rollouts cache`: every bytes entry in the order stored, files included, pages of rows.
        items = {key(i): value(i) for i in range(1200)}
        set_many(store, [*items.items(), (key(5000), b"x" * ROW_LIMIT)])
        items[key(5000)] = b"x" * ROW_LIMIT
        with reference(path) as cache:
            cache.set(key(6000), "text")
            cache.set(key(6001), Armed(path.parent / "ran"))
            cache.set(key(6002), b"gone", expire=-1)
        connection = _store._connect_read_only(os.path.join(path, "cache.db"))
        try:
            listed = list(_diskcache_rows.iter_rows(connection, str(path)))
        finally:
            connection.close()
        assert listed == list(items.items())
        assert not (path.parent / "ran").exists()

    def test_a_removed_value_file_is_a_miss(self, store: DiskStore, path: pathlib.Path) -> None:
        set_many(store, [(key(1), b"x" * ROW_LIMIT), (key(2), b"row")])
        for file in path.rglob("*.val"):
            file.unlink()
        assert get_many(store, [key(1), key(2)]) == [None, b"row"]


class Armed:
    """A value whose unpickling creates a file."""

    def __init__(self, target: pathlib.Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (self.target,))


class TestTransactions:
    def test_a_failed_call_writes_nothing(self, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
        store = DiskStore(tmp_path / "c")
        set_many(store, [(key(0), b"before")])
        real = _diskcache_rows.write_rows

        def write_then_fail(cache: diskcache.Cache, items: dict[str, bytes]) -> None:
            real(cache, items)
            raise OSError("disk full")

        monkeypatch.setattr(_store, "write_rows", write_then_fail)
        with pytest.raises(ConfigurationError, match=r"cannot write to the cache database .*cache\.db: disk full"):
            set_many(store, [(key(0), b"after"), (key(1), b"new"), (key(2), b"x" * ROW_LIMIT)])
        monkeypatch.undo()
        assert get_many(store, [key(0), key(1), key(2)]) == [b"before", None, None]
        store.close()
        with reference(tmp_path / "c") as cache:
            assert len(cache) == 1

    def test_concurrent_calls(self, store: DiskStore, path: pathlib.Path) -> None:
        async def main() -> list[list[bytes | None]]:
            writes = [store.set_many([(key(i), value(i))]) for i in range(40)]
            await asyncio.gather(*writes)
            return await asyncio.gather(*(store.get_many([key(i), key(i + 1)]) for i in range(40)))

        results = run(main())
        assert results == [[value(i), value(i + 1) if i < 39 else None] for i in range(40)]
        check_consistent(path, {key(i): value(i) for i in range(40)})


class TestLoopsAndClosing:
    def test_several_event_loops_share_one_store(self, store: DiskStore) -> None:
        for i in range(4):  # a fresh loop each time, as the sync facade's calls and asyncio.run() do
            set_many(store, [(key(i), value(i))])
            assert get_many(store, [key(j) for j in range(i + 1)]) == [value(j) for j in range(i + 1)]

    def test_loops_in_other_threads(self, store: DiskStore) -> None:
        import threading

        results: list[Any] = []

        def worker(i: int) -> None:
            set_many(store, [(key(i), value(i))])
            results.append(get_many(store, [key(i)]))

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(results) == sorted([[value(i)] for i in range(4)])

    def test_one_worker_thread(self, store: DiskStore) -> None:
        import threading

        async def thread_name() -> str:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(store._executor, lambda: threading.current_thread().name)

        get_many(store, [])
        first = run(thread_name())
        get_many(store, [])
        assert run(thread_name()) == first and first.startswith("fw_rollouts-cache")

    def test_close_twice_and_then_refuse(self, store: DiskStore) -> None:
        set_many(store, [(key(0), b"x")])
        run(store.aclose())
        run(store.aclose())
        store.close()
        for call in (store.get_many([key(0)]), store.set_many([]), store.stats()):
            with pytest.raises(ConfigurationError, match="cache store is closed"):
                run(call)
        assert "closed" in repr(store)

    def test_close_before_use(self, tmp_path: pathlib.Path) -> None:
        store = DiskStore(tmp_path / "c")
        store.close()
        with pytest.raises(ConfigurationError, match="cache store is closed"):
            get_many(store, [])

    def test_close_in_another_loop_waits_for_queued_work(self, tmp_path: pathlib.Path) -> None:
        store = DiskStore(tmp_path / "c")

        async def write_and_close() -> None:
            pending = asyncio.ensure_future(store.set_many([(key(i), value(i)) for i in range(500)]))
            await asyncio.sleep(0)  # the write is queued on the worker thread
            await store.aclose()
            await pending

        run(write_and_close())
        with reference(tmp_path / "c") as cache:
            assert len(cache) == 500

    def test_async_context_manager(self, tmp_path: pathlib.Path) -> None:
        async def main() -> DiskStore:
            async with DiskStore(tmp_path / "c") as store:
                await store.set_many([(key(1), b"x")])
            return store

        store = run(main())
        with pytest.raises(ConfigurationError, match="closed"):
            get_many(store, [])


class TestBadDirectory:
    def test_a_file(self, tmp_path: pathlib.Path) -> None:
        file = tmp_path / "file"
        file.write_text("not a directory")
        with pytest.raises(ConfigurationError, match=r"cache_dir=.*file.* is an existing file"):
            DiskStore(file)
        with pytest.raises(ConfigurationError, match="cache_dir"):
            DiskStore.check(file)

    def test_a_path_under_a_file_cannot_be_created(self, tmp_path: pathlib.Path) -> None:
        (tmp_path / "file").write_text("x")
        with pytest.raises(ConfigurationError, match=r"cache_dir=.* cannot be created"):
            DiskStore(tmp_path / "file" / "sub" / "cache")

    def test_an_unwritable_directory_is_read_only(
        self, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        locked = tmp_path / "locked"
        first = DiskStore(locked)
        set_many(first, [(key(1), b"kept")])
        first.close()
        locked.chmod(0o500)
        try:
            if _can_write_in(locked):
                pytest.skip("running as a user (root) whom directory permissions do not stop (test_cache_damage "
                            "covers root with a read-only mount)")  # fmt: skip
            store = DiskStore(locked)  # no error: the hits can still be served
            with caplog.at_level(logging.WARNING, logger="fw_rollouts.cache"):
                set_many(store, [(key(2), b"new")])  # stores nothing
                assert get_many(store, [key(1), key(2)]) == [b"kept", None]
            store.close()
            (record,) = caplog.records
            assert f"the cache at {locked} cannot be written (permission denied" in record.getMessage()
            with pytest.raises(ConfigurationError, match=r"cache_dir=.* cannot be created"):
                DiskStore(locked / "sub")
        finally:
            locked.chmod(0o700)

    def test_an_unwritable_database_is_read_only(self, tmp_path: pathlib.Path) -> None:
        directory = tmp_path / "c"
        first = DiskStore(directory)
        set_many(first, [(key(1), b"kept")])
        first.close()
        database = directory / "cache.db"
        database.chmod(0o400)
        try:
            if os.access(database, os.W_OK):
                pytest.skip("running as a user (root) whom file permissions do not stop")
            store = DiskStore(directory)
            set_many(store, [(key(2), b"new")])
            assert get_many(store, [key(1), key(2)]) == [b"kept", None]
            store.close()
        finally:
            database.chmod(0o600)

    def test_check_creates_and_returns_the_absolute_path(self, tmp_path: pathlib.Path) -> None:
        target = tmp_path / "a" / "b"
        assert DiskStore.check(target) == str(target)
        assert target.is_dir()
        assert DiskStore.check(target) == str(target)  # an existing directory is fine

    def test_not_a_database_is_set_aside(self, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
        directory = tmp_path / "c"
        directory.mkdir()
        (directory / "cache.db").write_bytes(b"this is not SQLite" * 100)
        store = DiskStore(directory)  # the cheap check does not open the database
        with caplog.at_level(logging.WARNING, logger="fw_rollouts.cache"):
            assert get_many(store, [key(0)]) == [None]
        set_many(store, [(key(0), b"new")])
        assert get_many(store, [key(0)]) == [b"new"]
        store.close()
        (aside,) = directory.glob("cache.db.corrupt-*")
        assert aside.read_bytes() == b"this is not SQLite" * 100
        (record,) = caplog.records
        assert str(directory / "cache.db") in record.getMessage() and str(aside) in record.getMessage()
        assert "not a database" in record.getMessage()
        check_consistent(directory, {key(0): b"new"})


def _can_write_in(directory: pathlib.Path) -> bool:
    probe = directory / "probe"
    try:
        probe.write_bytes(b"")
    except OSError:
        return False
    probe.unlink()
    return True
