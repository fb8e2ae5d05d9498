"""Few-shot tasks: rows of data, a prompt template and the label verbaliser.

A task is a train split (the pool demonstrations are drawn from) and a test
split (the queries), plus how to turn a row into text:

- ``Template``: an instruction, a demonstration input with ``{column}`` fields,
  the target delimiter between input and answer and the separator between
  demonstrations — lm-evaluation-harness's layout
  ``instruction + k x (input + target_delimiter + answer + fewshot_delimiter) + input``.
- ``choices``: the verbalised labels of a multiple-choice task (the label
  column holds one of them, or its index); ``None`` for a generative task,
  whose label column holds the gold answer text.

Built-in tasks live in ``assets/tasks/NAME/`` (``task.json``, ``train.csv``,
``test.csv``); users upload CSV/JSONL files with a column mapping, or name a
Hub dataset when there is network.
"""
from __future__ import annotations

import io
import json
import re
import string
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from core.errors import UserError
from core.request import unescape  # noqa: F401 - one unescape for the CLI, the UI and tasks

TASKS_DIR = Path(__file__).resolve().parent.parent / "assets" / "tasks"
MAX_UPLOAD_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True)
class Template:
    input: str                        # "Review: {text}\nSentiment:"
    instruction: str = ""             # printed once before the demonstrations
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"

    def fields(self) -> list[str]:
        """The ``{column}`` names the input template uses, in order."""
        try:
            parsed = list(string.Formatter().parse(self.input))
        except ValueError as err:
            raise UserError(f"The template {self.input!r} is malformed ({err}). "
                            "Use {column} for a field and {{ }} for a literal brace.") from None
        names = []
        for _, name, _, _ in parsed:
            if name is None:
                continue
            if not name.isidentifier():
                raise UserError(f"The template field {{{name}}} is not a column name.")
            names.append(name)
        return list(dict.fromkeys(names))

    def render(self, row: dict) -> str:
        missing = [f for f in self.fields() if f not in row]
        if missing:
            raise UserError(f"The template uses {{{missing[0]}}} but the data has no column "
                            f"{missing[0]!r} (columns: {', '.join(map(str, row))}).")
        return self.input.format(**{f: _text(row[f]) for f in self.fields()})


def _text(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True)
class Task:
    name: str
    train: pd.DataFrame = field(repr=False)
    test: pd.DataFrame = field(repr=False)
    template: Template
    label_column: str
    choices: tuple[str, ...] | None = None   # None: generative
    description: str = ""
    unrelated_labels: tuple[str, ...] = ()   # Wei et al. 2023's foo/bar stand-ins

    @property
    def generative(self) -> bool:
        return self.choices is None

    def gold(self, row: dict) -> str:
        """The gold answer text of a row (its verbalised label)."""
        value = row[self.label_column]
        if self.choices is None:
            return _text(value)
        text = _text(value)
        if text in self.choices:
            return text
        if text.lstrip("-").isdigit() and 0 <= int(text) < len(self.choices):
            return self.choices[int(text)]
        raise UserError(f"Label {text!r} is not one of the choices "
                        f"({', '.join(self.choices)}). Add it to the verbaliser or fix the row.")

    def with_template(self, template: Template) -> "Task":
        validate(replace(self, template=template))
        return replace(self, template=template)

    def rows(self, split: str) -> list[dict]:
        return getattr(self, split).to_dict("records")


def validate(task: Task, source_rows: dict[str, list[int]] | None = None, origin: dict[str, str] | None = None) -> Task:
    """Raise ``UserError`` naming the first problem; return the task when it is usable.

    ``source_rows[split][i]``: the 0-based data row of the user's file that row ``i`` of the split came
    from (a shuffled split moves rows), and ``origin[split]`` names that file, so messages point at it.
    """
    def where(split: str, i: int) -> str:
        if source_rows is None:
            return f"Row {i + 1} of the {split} split"
        return f"Row {source_rows[split][i] + 1} of {origin[split]} (counting data rows after the header)"

    for split in ("train", "test"):
        df = getattr(task, split)
        if len(df) == 0:
            raise UserError(f"The {split} split of task {task.name!r} has no rows.")
        for col in [*task.template.fields(), task.label_column]:
            if col not in df.columns:
                raise UserError(f"The {split} split has no column {col!r} "
                                f"(columns: {', '.join(map(str, df.columns))}).")
        if df[task.label_column].isna().any():
            bad = int(df[task.label_column].isna().to_numpy().argmax())
            raise UserError(f"{where(split, bad)} has no label.")
        for i, row in enumerate(df.to_dict("records")):
            try:
                task.gold(row)
            except UserError as err:
                raise UserError(f"{where(split, i)}: {err}") from None
    if task.choices is not None and len(set(task.choices)) < 2:
        raise UserError("A multiple-choice task needs at least two distinct choices.")
    return task


# ---- built-in tasks ------------------------------------------------------------

def builtin_names() -> list[str]:
    return sorted(p.name for p in TASKS_DIR.iterdir() if (p / "task.json").exists())


def load_builtin(name: str) -> Task:
    folder = TASKS_DIR / name
    if not (folder / "task.json").exists():
        raise UserError(f"No built-in task {name!r}. Built-in tasks: {', '.join(builtin_names())}.")
    meta = json.loads((folder / "task.json").read_text())
    read = lambda split: pd.read_csv(folder / f"{split}.csv", dtype=str, keep_default_na=False)
    return validate(Task(
        name=name, train=read("train"), test=read("test"),
        template=Template(**meta["template"]), label_column=meta["label_column"],
        choices=tuple(meta["choices"]) if meta.get("choices") else None,
        description=meta.get("description", ""),
        unrelated_labels=tuple(meta.get("unrelated_labels", ())),
    ))


# ---- user data -------------------------------------------------------------------

def read_table(data: bytes | str | Path, name: str = "upload") -> pd.DataFrame:
    """A CSV or JSONL file (by extension, else sniffed) as a DataFrame of strings."""
    if isinstance(data, (str, Path)):
        path = Path(data)
        if not path.exists():
            raise UserError(f"File not found: {path}")
        if path.stat().st_size > MAX_UPLOAD_BYTES:
            raise UserError(f"{path.name} is larger than {MAX_UPLOAD_BYTES >> 20} MB.")
        name, data = path.name, path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserError(f"{name} is not UTF-8 text (byte {err.start}). Save it as UTF-8 and upload it again.") from None
    if not text.strip():
        raise UserError(f"{name} is empty.")
    is_jsonl = name.endswith((".jsonl", ".json")) or text.lstrip().startswith("{")
    try:
        if is_jsonl:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
            if not all(isinstance(r, dict) for r in rows):
                raise ValueError("every line must be a JSON object")
            df = pd.DataFrame(rows).astype(str)
        else:
            df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as err:
        kind = "JSONL" if is_jsonl else "CSV"
        raise UserError(f"{name} is not valid {kind}: {str(err).splitlines()[0]}") from None
    if len(df) == 0:
        raise UserError(f"{name} has a header but no rows.")
    df.columns = [str(c).strip() for c in df.columns]
    return df


def task_from_tables(train: pd.DataFrame, test: pd.DataFrame, template: Template,
                     label_column: str, choices: list[str] | None, name: str = "custom") -> Task:
    """A task from user tables; ``choices`` empty or None makes it generative."""
    choices = [c for c in (choices or []) if c != ""]
    rows = {"train": list(train.index), "test": list(test.index)}  # the file's rows (split_table keeps them)
    one_file = bool(train.attrs.get("split_from_one_file"))
    origin = {s: "the uploaded file" if one_file else f"the {s} file" for s in rows}
    return validate(Task(name=name, train=train.reset_index(drop=True), test=test.reset_index(drop=True),
                         template=template, label_column=label_column,
                         choices=tuple(choices) if choices else None), rows, origin)


def split_table(df: pd.DataFrame, test_fraction: float = 0.5, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One uploaded table as (train, test): a seeded shuffle, then a cut."""
    if len(df) < 2:
        raise UserError("A single table needs at least two rows to split into train and test.")
    shuffled = df.sample(frac=1.0, random_state=seed)  # the index stays the row of the file it came from
    n_test = min(len(df) - 1, max(1, round(len(df) * test_fraction)))
    train, test = shuffled.iloc[n_test:].copy(), shuffled.iloc[:n_test].copy()
    train.attrs["split_from_one_file"] = test.attrs["split_from_one_file"] = True
    return train, test


HUB_DATASET_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


def load_hub_dataset(dataset_id: str, train_split: str = "train", test_split: str = "test",
                     config: str | None = None, offline: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two splits of a dataset on the Hugging Face Hub (needs network, or the Hub's cache).

    Only a Hub id is read, fetched into the Hub's cache and loaded from there: a name is never looked up on the
    local disk (``datasets.load_dataset`` would read a local folder of that name first), so this field reads no
    local folder whatever is typed, and its errors never say whether a path exists. Local files are uploaded."""
    dataset_id = (dataset_id or "").strip()
    if not HUB_DATASET_ID.match(dataset_id) or ".." in dataset_id:
        raise UserError(f"{dataset_id!r} is not a Hub dataset id (like 'imdb' or 'owner/name'). For a file of "
                        "your own, choose Upload instead.")
    if offline:
        raise UserError(f"Dataset {dataset_id!r} needs the network and the app runs offline. "
                        "Download it where there is network and upload the splits as CSV.")
    try:
        import datasets
        from huggingface_hub import snapshot_download
    except ImportError:
        raise UserError("Loading Hub datasets needs the 'datasets' package: pip install datasets") from None
    try:
        folder = snapshot_download(dataset_id, repo_type="dataset")
        ds = datasets.load_dataset(folder, config)
    except Exception as err:  # noqa: BLE001 - any failure becomes one plain message
        raise UserError(f"Could not load dataset {dataset_id!r} from the Hub: "
                        f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None
    for split in (train_split, test_split):
        if split not in ds:
            raise UserError(f"Dataset {dataset_id!r} has no split {split!r} (splits: {', '.join(ds)}).")
    return ds[train_split].to_pandas().astype(str), ds[test_split].to_pandas().astype(str)
