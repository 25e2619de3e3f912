"""A study run across a Ray cluster: :func:`generate_many`, which returns what ``AsyncFireworks.generate_many`` does.

Ray does the scheduling, retrying and scaling; this module supplies the worker. The items, each with its
index, become a ``ray.data`` dataset; ``map_batches`` hands batches of them to a pool of ``num_workers`` actors
(``ray.data.ActorPoolStrategy``), each holding one :class:`~fw_rollouts.AsyncFireworks` made from the call's
options, which runs its batch as one study (``generate_many``'s own pipeline: cache, budget, retries, echo once).
A batch comes back as rows: one per sample in the study file's Parquet row form (exact: floats as float64,
text Parquet cannot hold in the row's ``exact_json``), and one per failed item with its error. The driver puts
them back in item order, so the results, and a failure, are those of one ``generate_many`` in one process:
an item's seeds are ``range(seed, seed + n)`` wherever it runs.

Every worker uses the same ``cache=`` and ``budget=``: give Redis URLs (``"redis://host:6379/0"``) so workers on
many machines share one store and one rate budget. A local ``cache_dir`` is made absolute on the driver, so the
workers of one machine share it; on many machines each has its own.

Importing this module imports ``ray``; ``import fw_rollouts`` does not.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pickle
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

import ray
import ray.data
from ray.data.datasource import FilenameProvider

from ._client import (
    AsyncFireworks,
    check_n_samples,
    check_seed,
    prepare_study,
    rollouts_of,
    run_prepared,
    study_failure,
    study_header,
)
from ._exceptions import FwRolloutsError, InvalidTypeError, ValidationError
from ._files import write_whole
from ._models import FwResponse, FwRollouts
from ._redact import redactor, scrub_error
from ._study import StudyItem, coerce_items
from ._study_file import (
    FORMAT,
    HEADER_NAME,
    VERSION,
    import_pyarrow,
    parquet_schema,
    sample_from_row,
    sample_row,
    study_format,
)
from ._validators import on_error as check_on_error
from ._validators import positive_integer

__all__ = ["generate_many"]

_MAX_BATCH: Final = 64
"""Items per batch at most, unless ``batch_size`` says otherwise: a retried batch re-runs this many items."""
_BATCHES_PER_WORKER: Final = 4
"""Batches per worker at least (when there are items enough), so that a slow batch does not hold the others."""
_FAILURE: Final = "failure"
"""The column (pickled error) of a failed item's row; null in sample rows, and never written to Parquet."""


class _Job:
    """What every worker needs: the client's options (the API key and Redis URLs among them) and the call's
    ``n_samples`` and ``seed``. Its ``repr`` names the options only, so Ray's logs and errors never show a value."""

    __slots__ = ("n_samples", "options", "seed")

    def __init__(self, options: Mapping[str, Any], n_samples: int, seed: int) -> None:
        self.options = dict(options)
        self.n_samples = n_samples
        self.seed = seed

    def __repr__(self) -> str:
        return f"_Job(options={sorted(self.options)}, n_samples={self.n_samples}, seed={self.seed})"


class _StudyWorker:
    """A Ray actor's worker: one client, made once; each batch of items run as one study, returned as rows."""

    def __init__(self, job: _Job) -> None:
        self._job = job
        # Loop-bound parts (connections, budget waiters) are made on first use, on Ray's event loop for the UDF.
        self._client = AsyncFireworks(**job.options)
        pa, _ = import_pyarrow()
        self._pa = pa
        self._schema = _row_schema(pa)

    def __repr__(self) -> str:
        return f"_StudyWorker({self._job!r})"

    async def __call__(self, batch: Any) -> Any:
        indices: list[int] = batch.column("index").to_pylist()
        # The driver pickled these items itself, from the caller's own objects (Ray pickles them anyway).
        items: list[StudyItem] = [pickle.loads(data) for data in batch.column("item").to_pylist()]
        client, job = self._client, self._job
        results, failed = await run_prepared(
            client, prepare_study(client, items, n_samples=job.n_samples, seed=job.seed)
        )
        redact = redactor(client.settings.api_key)
        rows: list[dict[str, Any]] = []
        for local, (index, rollouts) in enumerate(zip(indices, results, strict=True)):
            rows.extend(sample_row(index, response) for response in rollouts.responses)
            error = failed.get(local)
            if error is not None:
                # The samples travel as rows; the error without them (the driver attaches its own FwRollouts).
                error = scrub_error(error, redact)._evolve(rollouts=None)
            # One row per item without a seed: where its cache is, and its error if it failed.
            failure = None if error is None else pickle.dumps(error)
            rows.append({"item": index, "cache_dir": rollouts.cache_dir, _FAILURE: failure})
        return self._pa.Table.from_pylist(rows, schema=self._schema)


def _row_schema(pa: Any) -> Any:
    """The study file's row schema, with where the item's cache is and a failed item's error."""
    schema = parquet_schema(pa)
    return schema.append(pa.field("cache_dir", pa.string())).append(pa.field(_FAILURE, pa.binary()))


def _samples_only(batch: Any) -> Any:
    """The sample rows of a batch, in the study file's schema (what ``load_study`` reads)."""
    pa, _ = import_pyarrow()
    samples = batch.filter(batch.column("seed").is_valid())
    return samples.drop_columns(["cache_dir", _FAILURE]).cast(parquet_schema(pa))


class _Parts(FilenameProvider):
    """Ray's Parquet files named as parts of a study directory, which :func:`fw_rollouts.load_study` reads:
    ``part-<task>-<write uuid>-<n>.parquet`` (Ray wants the write's uuid in the name, and adds ``-<n>``)."""

    def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
        return f"part-{task_index:06d}-{write_uuid}"


def _worker_options(client_options: Mapping[str, Any]) -> dict[str, Any]:
    """The options each worker's client is made with: the caller's, the driver's ``FIREWORKS_API_KEY`` as
    ``api_key`` if none is given, a relative ``cache_dir`` made absolute (every worker of this machine then shares
    the driver's), and no progress bar (a worker's stderr is a log)."""
    options = dict(client_options)
    if options.get("api_key") is None and os.environ.get("FIREWORKS_API_KEY", "").strip():
        # The driver's key, as in one process: a worker on another machine need not have the variable.
        options["api_key"] = os.environ["FIREWORKS_API_KEY"].strip()
    for name in ("cache", "budget", "transport", "clock"):
        value = options.get(name)
        if value is not None and not isinstance(value, str):
            raise InvalidTypeError(
                name,
                value,
                "a URL string (e.g. 'redis://host:6379/0') or None: an object cannot be shared by Ray workers "
                "on other machines",
            )
    cache_dir = options.get("cache_dir")
    if isinstance(cache_dir, (str, os.PathLike)):
        options["cache_dir"] = os.path.abspath(os.fspath(cache_dir))
    options["progress_bar"] = False
    return options


def _check_output(output: str | os.PathLike[str]) -> str:
    if study_format(output) != "parquet":
        raise ValidationError(
            "output", os.fspath(output), "a path ending in .parquet (Ray writes a directory of Parquet parts)"
        )
    where = os.path.abspath(os.fspath(output))
    if os.path.exists(where) and (not os.path.isdir(where) or os.listdir(where)):
        raise ValidationError(
            "output",
            where,
            "a new (or empty) directory: a Ray study is written whole; re-run with the same cache= and "
            "only what the cache lacks is requested",
        )
    return where


def generate_many(
    items: Sequence[Any],
    /,
    n_samples: int = 1,
    *,
    seed: int | None = None,
    num_workers: int | None = None,
    batch_size: int | None = None,
    on_error: Literal["raise", "return"] = "raise",
    output: str | os.PathLike[str] | None = None,
    ray_remote_args: Mapping[str, Any] | None = None,
    **client_options: Any,
) -> list[FwRollouts]:
    """Sample a study on the connected Ray cluster: what ``AsyncFireworks(**client_options).generate_many(items,
    n_samples, seed=seed, on_error=on_error)`` returns in one process, item for item, seed for seed.

    ``client_options`` are :class:`~fw_rollouts.AsyncFireworks`'s (``model``, ``api_key``, sampling defaults such
    as ``temperature`` and ``max_tokens``, limits, ``cache_dir``); ``cache=`` and ``budget=`` are URL strings here
    (``"redis://host:6379/0"``), so that every worker shares one store and one rate budget. Each worker makes one
    client from them; the options reach the workers as Ray passes an actor's constructor arguments, and nothing
    this module gives Ray to show (reprs, names) holds their values.

    ``num_workers`` actors (default: the cluster's CPUs) each run batches of ``batch_size`` items (default: up to
    64, at least 4 batches per worker) as one study, ``max_concurrency`` requests at a time. Ray restarts an actor
    that dies and retries its batch (``max_restarts=-1``, ``max_task_retries=-1``): with a shared cache, the
    samples the lost batch had fetched are not paid for again. ``ray_remote_args`` go to the actors
    (``{"num_cpus": 0.5}``; default one CPU each). ``ray.init()`` is called only if Ray is not connected yet.

    Every item and option is checked on the driver before any request. A failed item fails as in
    ``generate_many``: with ``on_error="raise"`` an error of the first failed item's class, whose ``results``
    holds every item's :class:`FwRollouts`; with ``"return"`` that list. ``output`` (a path ending in
    ``.parquet``, new or empty) has Ray write every sample as a study directory (``_study.json`` and parts), which
    :func:`fw_rollouts.load_study` reads back; the results are returned too, as ``generate_many(output=...)``
    does. Progress is Ray Data's own (its bars on the driver; ``progress_bar=False`` turns them off).
    """
    check_on_error(on_error)
    n = check_n_samples(n_samples)
    first = check_seed(seed)
    if num_workers is not None:
        positive_integer("num_workers", num_workers)
    if batch_size is not None:
        positive_integer("batch_size", batch_size)
    if ray_remote_args is not None and not isinstance(ray_remote_args, Mapping):
        raise InvalidTypeError("ray_remote_args", ray_remote_args, "a mapping of Ray actor options, or None")
    where = _check_output(output) if output is not None else None
    shown = client_options.get("progress_bar", True)
    options = _worker_options(client_options)
    study = coerce_items(items)
    # The driver's client checks every option and item, as each worker's will: bad input fails here, at once.
    client = AsyncFireworks(**{**options, "progress_bar": shown})
    prepared = prepare_study(client, study, n_samples=n, seed=first)
    if not ray.is_initialized():
        ray.init()
    resources: Mapping[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    workers = num_workers or max(1, int(resources.get("CPU", 1)))
    size = batch_size or max(1, min(_MAX_BATCH, math.ceil(len(study) / (workers * _BATCHES_PER_WORKER))))
    if where is not None:
        os.makedirs(where, exist_ok=True)
        header = {"format": FORMAT, "version": VERSION, **study_header(prepared)}
        write_whole(os.path.join(where, HEADER_NAME), _json_bytes(header))

    rows = [{"index": i, "item": pickle.dumps(item)} for i, item in enumerate(study)]
    context = ray.data.DataContext.get_current()
    bars, original = context.enable_progress_bars, context.raise_original_map_exception
    context.enable_progress_bars = bars and bool(shown)
    # An error a worker raises (as generate_many would raise it: no API key...) reaches the caller as itself
    # (Ray's RayTaskError is then also an instance of its class), not as Ray Data's UserCodeException.
    context.raise_original_map_exception = True
    try:
        dataset = ray.data.from_items(rows, override_num_blocks=math.ceil(len(rows) / size)).map_batches(
            _StudyWorker,
            fn_constructor_kwargs={"job": _Job(options, n, first)},
            batch_size=size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=2),
            # Ray Data's actor pools restart an actor that dies and retry its batch (max_restarts=-1,
            # max_task_retries=-1 by default); an exception raised in our code is not retried (it is a bug).
            **{"num_cpus": 1, **(ray_remote_args or {})},
        )
        if where is not None:
            dataset = dataset.materialize()
            dataset.map_batches(_samples_only, batch_format="pyarrow", batch_size=None).write_parquet(
                where, filename_provider=_Parts()
            )
        samples: list[dict[int, FwResponse]] = [{} for _ in prepared]
        failures: dict[int, FwRolloutsError] = {}
        locations: dict[int, str | None] = {}
        batch: Any
        for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
            for row in batch.to_pylist():
                index = row["item"]
                if row["seed"] is None:
                    locations[index] = row["cache_dir"]
                    if row[_FAILURE] is not None:
                        failures[index] = pickle.loads(row[_FAILURE])
                    continue
                response = sample_from_row(row)
                response.item = index
                samples[index][response.seed] = response
    finally:
        context.enable_progress_bars, context.raise_original_map_exception = bars, original
    return _results(prepared, samples, failures, locations, on_error, client.settings.api_key)


def _results(
    prepared: Sequence[Any],
    samples: list[dict[int, FwResponse]],
    failures: Mapping[int, FwRolloutsError],
    locations: Mapping[int, str | None],
    on_error: str,
    api_key: str | None,
) -> list[FwRollouts]:
    results = []
    failed: dict[int, FwRolloutsError] = {}
    for p in prepared:
        error = failures.get(p.index)
        errors = dict(error.errors) if error is not None else {}
        rollouts = dataclasses.replace(
            rollouts_of(p, samples[p.index], p.settings, None, errors=errors), cache_dir=locations.get(p.index)
        )
        results.append(rollouts)
        if error is not None:
            failed[p.index] = error._evolve(rollouts=rollouts)
    if failed and on_error == "raise":
        raise scrub_error(study_failure(failed, results), redactor(api_key))
    return results


def _json_bytes(value: Any) -> bytes:
    import json

    return json.dumps(value, allow_nan=False).encode("ascii")
