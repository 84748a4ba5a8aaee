"""Parquet answers, written in parts as rows finish, so a crash loses only rows in flight.

A Parquet file is unreadable until its footer is written, so rows first go to
complete small files in `OUT.parts/` (written to a temporary name, fsynced, renamed).
When the run ends they are merged with any earlier answers into OUT, atomically.
`--resume` reads the ids already answered in OUT and in leftover parts and skips them
(failed rows are retried); merging keeps the newest row of each id, so a crash between
the merge and the removal of the parts never duplicates a row. An existing OUT is
never truncated: it is replaced, atomically, only by a finished merge.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

from ragbatch.errors import ParameterError, RagbatchError

# The Parquet metadata key of the run's settings: models, retrieval, engine arguments.
RUN_METADATA = b"ragbatch.run"

# Columns every answer row has, in order (documented in the README).
BASE_COLUMNS = [
    ("id", "string"),
    ("question", "string"),
    ("answer", "string"),
    ("sources", "list<string>"),
    ("chunk_ids", "list<string>"),
    ("scores", "list<double>"),
    ("passages_used", "int64"),
    ("prompt_tokens", "int64"),
    ("completion_tokens", "int64"),
    ("cost_usd", "double"),
    ("llm", "string"),
    ("embedder", "string"),
    ("finish_reason", "string"),
    ("citations", "list<string>"),  # the sources the answer cites as [n], in order
    ("citations_dropped", "int64"),  # [n] markers that point to no passage in the prompt
    ("error", "string"),
]


def _arrow_type(name: str):
    import pyarrow as pa

    if name.startswith("list<"):
        return pa.list_(_arrow_type(name[5:-1]))
    return {"string": pa.string(), "int64": pa.int64(), "double": pa.float64()}[name]


def answer_schema(questions: list[dict], count_encoding: str | None, base: list[tuple[str, str]] = BASE_COLUMNS, passed: frozenset[str] = frozenset()):
    """Base columns, optional tiktoken count columns, then the carried-through input fields.
    `judge` writes its verdicts the same way, with its own base columns; `passed` names the
    input fields a base column holds as they are (the judged `answer`), not carried again."""
    import pyarrow as pa

    fields = [pa.field(name, _arrow_type(kind)) for name, kind in base]
    if count_encoding:
        fields += [pa.field(f"prompt_tokens_{count_encoding}", pa.int64()), pa.field(f"completion_tokens_{count_encoding}", pa.int64())]
    ours = {name for name, _ in base}
    for name in carried_fields(questions, passed):
        values = [q.get(name) for q in questions]
        try:
            kind = pa.array(values).type
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            kind = pa.string()  # mixed types: stored as JSON text (see carry_values)
        fields.append(pa.field(carried_column(name, count_encoding, ours), pa.string() if kind == pa.null() else kind))
    return pa.schema(fields)


def carried_fields(questions: list[dict], passed: frozenset[str] = frozenset()) -> list[str]:
    """Input fields other than id and question (and `passed`), in first-seen order."""
    names: dict[str, None] = {}
    for q in questions:
        names.update((key, None) for key in q if key not in ("id", "question") and key not in passed)
    return list(names)


def carried_column(name: str, count_encoding: str | None = None, ours: set[str] | None = None) -> str:
    """An input field's output column; `input_` in front where ours has that name."""
    ours = set(ours or {n for n, _ in BASE_COLUMNS})
    if count_encoding:
        ours |= {f"prompt_tokens_{count_encoding}", f"completion_tokens_{count_encoding}"}
    return f"input_{name}" if name in ours else name


def carry_values(
    question: dict, schema, count_encoding: str | None = None, base: list[tuple[str, str]] = BASE_COLUMNS, passed: frozenset[str] = frozenset()
) -> dict:
    """The question's extra fields under their output column names."""
    import pyarrow as pa

    ours = {name for name, _ in base}
    row = {}
    for name in carried_fields([question], passed):
        column = carried_column(name, count_encoding, ours)
        value = question[name]
        if schema.field(column).type == pa.string() and not isinstance(value, (str, type(None))):
            value = json.dumps(value)
        row[column] = value
    return row


class AnswerWriter:
    """Writes answer rows for one OUT file; holds OUT's lock until `finish` or `close`.

    mode: "new" refuses an existing OUT (or leftover parts); "resume" keeps the rows
    already answered without error and answers the rest; "overwrite" starts over and
    replaces OUT only when `finish` merges the new rows.
    """

    def __init__(self, out: Path, schema, mode: str = "new", command: str = "ask"):
        from filelock import FileLock, Timeout

        self.out = Path(out)
        self.parts = self.out.with_name(self.out.name + ".parts")
        self.schema = schema
        self.mode = mode
        if not self.out.parent.is_dir():
            raise ParameterError("out", self.out, f"the folder {self.out.parent} does not exist")
        # Two runs on one OUT would merge and delete each other's parts.
        lock_file = self.out.with_name(f".{self.out.name}.lock")
        try:
            lock_file.touch()  # FileLock reports an unwritable folder as a lock held elsewhere
        except OSError as exc:
            raise ParameterError("out", self.out, f"cannot write there ({exc.strerror})") from None
        self._lock = FileLock(lock_file)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise RagbatchError(f"{self.out}: another `ragbatch {command}` is writing this file; run again when it has finished") from None
        try:
            self._prepare()
        except BaseException:
            self.close()
            raise

    def _prepare(self) -> None:
        if self.mode == "new" and self.out.exists():
            raise RagbatchError(
                f"{self.out}: already exists; pass {{resume}} to answer only the missing questions, {{overwrite}} to start over, or choose another {{out}}",
                refers=("resume", "overwrite", "out"),
            )
        if self.mode == "new" and self.parts.exists():
            raise RagbatchError(
                f"{self.parts}: left by an interrupted run; pass {{resume}} to finish it, or {{overwrite}} to start over", refers=("resume", "overwrite")
            )
        if self.mode == "overwrite":
            shutil.rmtree(self.parts, ignore_errors=True)
        try:
            self.parts.mkdir(exist_ok=True)
            probe = self.parts / f".probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise ParameterError("out", self.out, f"cannot write there ({exc.strerror})") from None
        self.count = len(list(self.parts.glob("part-*.parquet")))

    def done_ids(self) -> set[str]:
        """Ids answered without error by earlier runs, in OUT and in leftover parts.

        Rows that failed are not done: a resumed run retries them, and its row
        replaces the failed one when the files are merged.
        """
        import pyarrow.parquet as pq

        done: set[str] = set()
        for file in self._existing_files():
            try:
                table = pq.read_table(file, columns=["id", "error"])
            except Exception as exc:  # noqa: BLE001
                raise RagbatchError(f"{file}: cannot read earlier answers ({exc})") from None
            done.update(qid for qid, error in zip(table.column("id").to_pylist(), table.column("error").to_pylist()) if error is None)
        return done

    def _existing_files(self) -> list[Path]:
        """Earlier answers, oldest first: OUT (unless starting over), then parts in write order."""
        files = [self.out] if self.out.exists() and self.mode != "overwrite" else []
        return files + sorted(self.parts.glob("part-*.parquet"))

    def write(self, rows: list[dict]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not rows:
            return
        self.count += 1
        final = self.parts / f"part-{self.count:06d}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = self.parts / f".{final.name}.tmp"
        pq.write_table(pa.Table.from_pylist(rows, schema=self.schema), tmp)
        _fsync(tmp)
        os.replace(tmp, final)

    def earlier_run(self) -> dict | None:
        """The settings OUT's answers were made with (RUN_METADATA), if it exists and has them."""
        import pyarrow.parquet as pq

        if self.mode == "overwrite" or not self.out.exists():
            return None
        try:
            metadata = pq.read_schema(self.out).metadata or {}
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for bad files
            raise RagbatchError(f"{self.out}: cannot read earlier answers ({exc})") from None
        return json.loads(metadata[RUN_METADATA]) if RUN_METADATA in metadata else None

    def finish(self, order: list[str], run: dict | None = None) -> tuple[int, int]:
        """Merge earlier answers and parts into OUT in input order, one row per id (the
        newest), dropping rows of ids not in `order` (questions no longer in the input);
        return (rows, rows dropped). Then remove the parts and release the lock.

        `run` (the settings of the run that answered) is stored as JSON in the file's
        metadata under RUN_METADATA; without it the earlier file's is kept."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        tables = [pq.read_table(f) for f in self._existing_files()]
        table = pa.concat_tables(tables, promote_options="permissive") if tables else self.schema.empty_table()
        table = _newest_per_id(table)
        rank = {qid: i for i, qid in enumerate(order)}
        positions = [rank.get(qid) for qid in table.column("id").to_pylist()]
        kept = [i for i, position in enumerate(positions) if position is not None]
        dropped = table.num_rows - len(kept)
        table = table.take(pa.array(kept, pa.int64()))
        table = table.take(pc.sort_indices(pa.array([positions[i] for i in kept], pa.int64())))
        if run is not None:
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), RUN_METADATA: json.dumps(run)})
        tmp = self.out.with_name(f".{self.out.name}.tmp-{uuid.uuid4().hex[:8]}")
        pq.write_table(table, tmp)
        _fsync(tmp)
        os.replace(tmp, self.out)
        # A crash here leaves parts whose rows OUT already holds: the next merge keeps one of each.
        shutil.rmtree(self.parts, ignore_errors=True)
        self.close()
        return table.num_rows, dropped

    def close(self) -> None:
        try:
            self.parts.rmdir()  # only when empty: a run that wrote nothing leaves nothing
        except OSError:
            pass
        self._lock.release()


def refuse_other_settings(writer: AnswerWriter, run: dict, shaping: tuple[str, ...], parameters: dict[str, str | None], made: str = "answers") -> None:
    """A resumed file keeps one set of settings: rows made another way are not mixed into
    it. The `shaping` settings the file records are compared (older files record fewer);
    the refusal names each change by its parameter (`parameters`: setting -> parameter,
    None where none sets it; a setting not listed is its own parameter)."""
    earlier = writer.earlier_run()
    if earlier is None:
        return
    changed = [key for key in shaping if key in earlier and _comparable(key, json.loads(json.dumps(run[key]))) != _comparable(key, earlier[key])]
    if not changed:
        return
    parts, refers = [], ["overwrite", "out"]
    for key in changed:
        param = parameters.get(key, key)
        if param:
            refers.append(param)
        parts.append(f"{'{' + param + '}' if param else key} {_shown(earlier[key])}, now {_shown(run[key])}")
    raise RagbatchError(
        f"{writer.out}: its {made} were made with other settings ({'; '.join(parts)}); use {{overwrite}} to start over, or another {{out}}",
        refers=tuple(refers),
    )


def _comparable(key: str, value):
    # Files before per-request seeds were optional recorded 0 for "no --seed".
    return None if key == "seed" and value == 0 else value


def _shown(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _newest_per_id(table):
    """Keep the last row of each id: files are concatenated oldest first."""
    ids = table.column("id").to_pylist()
    seen: set[str] = set()
    keep = []
    for i in range(len(ids) - 1, -1, -1):
        if ids[i] not in seen:
            seen.add(ids[i])
            keep.append(i)
    return table if len(keep) == len(ids) else table.take(sorted(keep))


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())
