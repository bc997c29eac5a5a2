"""Concept specs and probe files: parse, validate, and fail with errors that name the line.

A *probe* is one prompt with optional answer, distractors and leak patterns (docs/method.md, section
10); probe files are JSONL. A *concept spec* is YAML: a name, training items (forget / retain, the
same fields as probes), leak patterns, refusal responses and the evaluation probe files, which must
be worded apart from the training items. `builtin:NAME` refers to specs shipped in
`aglora/data/concepts/NAME.yaml`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aglora.errors import AgloraError
from aglora.settings import load_yaml, read_utf8

DATA_DIR = Path(__file__).parent / "data"
SPLITS = ("forget", "neighbor", "utility")
FORMATS = ("chat", "completion")
_PROBE_FIELDS = {"id", "split", "family", "format", "prompt", "prefix", "answer", "distractors",
                 "leak_patterns"}


@dataclass
class Probe:
    """One prompt to score or generate from. Text scored = context + ' ' + option."""

    prompt: str
    split: str = "forget"
    family: str = "direct"
    format: str = "chat"
    id: str = ""
    prefix: str = ""
    answer: str | None = None
    distractors: list[str] = field(default_factory=list)
    leak_patterns: list[str] = field(default_factory=list)

    @property
    def has_choice(self) -> bool:
        return bool(self.answer) and bool(self.distractors)

    @property
    def key(self) -> str:
        return f"{self.split}/{self.family}"

    @property
    def context(self) -> tuple[str, str, str]:
        """(format, prompt, prefix): what the answer follows; probes with the same context
        share every token before it."""
        return (self.format, self.prompt, self.prefix)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("id", "split", "family", "format", "prompt", "prefix",
                                               "answer", "distractors", "leak_patterns")}


def check_pattern(pat: Any, where: str) -> None:
    """Refuse a leak pattern that is not a non-empty string holding a valid regex."""
    if not isinstance(pat, str) or not pat.strip():
        raise AgloraError(f"{where}: leak pattern {pat!r} is not a regex string; write it in "
                          "quotes, e.g. leak_patterns: [\"nolan\"]")
    try:
        re.compile(pat)
    except (re.error, OverflowError, RecursionError, ValueError) as exc:
        raise AgloraError(f"{where}: leak pattern {pat!r} is not a valid regex ({exc})"
                          ) from None


def string_list(value: Any, key: str, where: Any, example: str) -> list[str]:
    """`value` as a list of non-empty strings; anything else (a lone string too) is an error that
    shows the list form, `example`."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise AgloraError(f"{where}: '{key}' must be a list, got {type(value).__name__} "
                          f"{_short(value)}; write it as a list, e.g. {key}: {example}")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise AgloraError(f"{where}: {key}[{i}] must be a non-empty string, got "
                              f"{_short(item)}")
    return list(value)


def _short(value: Any, n: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


def probe_from_dict(obj: Any, where: str, default_split: str | None = None) -> Probe:
    if not isinstance(obj, dict):
        raise AgloraError(f"{where}: expected a JSON object with at least 'prompt' and 'split'")
    unknown = sorted(set(obj) - _PROBE_FIELDS, key=str)
    if unknown:
        raise AgloraError(f"{where}: unknown field '{unknown[0]}' (known: "
                          f"{', '.join(sorted(_PROBE_FIELDS))})")
    data = dict(obj)
    if default_split and "split" not in data:
        data["split"] = default_split
    for req in ("prompt", "split"):
        if not isinstance(data.get(req), str) or not data[req].strip():
            raise AgloraError(f"{where}: missing or empty '{req}'")
    if data["split"] not in SPLITS:
        raise AgloraError(f"{where}: split {data['split']!r} is not one of {', '.join(SPLITS)}")
    fmt = data.get("format", "chat")
    if fmt not in FORMATS:
        raise AgloraError(f"{where}: format {fmt!r} is not one of {', '.join(FORMATS)}")
    for listf in ("distractors", "leak_patterns"):
        v = data.get(listf, [])
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise AgloraError(f"{where}: '{listf}' must be a list of strings")
        if not all(x.strip() for x in v):
            raise AgloraError(f"{where}: '{listf}' holds an empty string; drop it")
    for strf in ("id", "family", "prefix", "answer"):
        if strf in data and data[strf] is not None and not isinstance(data[strf], str):
            raise AgloraError(f"{where}: '{strf}' must be a string")
    answer = data.get("answer")
    if answer is not None and not answer.strip():
        raise AgloraError(f"{where}: 'answer' is empty; give the answer text or leave the "
                          "field out")
    if answer is not None and answer.strip().lower() in {
            d.strip().lower() for d in data.get("distractors", [])}:
        raise AgloraError(f"{where}: the answer {answer!r} is also among the distractors; a "
                          "distractor must be a wrong answer")
    for pat in data.get("leak_patterns", []):
        check_pattern(pat, where)
    return Probe(**{k: v for k, v in data.items() if v is not None})


def load_probes(path: str | Path, skip_invalid: bool = False) -> tuple[list[Probe], int]:
    """Read a JSONL probe file; return (probes, number of skipped invalid lines)."""
    path = Path(path)
    if not path.is_file():
        raise AgloraError(f"probe file {path} not found")
    probes: list[Probe] = []
    seen: dict[str, int] = {}
    skipped = 0
    text = read_utf8(path)  # bytes that are not UTF-8: an error, even with skip_invalid
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("//"):
            continue
        where = f"{path}:{lineno}"
        try:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise AgloraError(f"{where}: malformed JSON ({exc.msg} at column {exc.colno}); "
                                  "each line must be one JSON object") from None
            probe = probe_from_dict(obj, where)
        except AgloraError:
            if skip_invalid:
                skipped += 1
                continue
            raise
        if not probe.id:
            probe.id = f"{path.stem}-{lineno}"
        if probe.id in seen:
            raise AgloraError(f"{where}: probe id {probe.id!r} also on line {seen[probe.id]}; "
                              "give each probe its own id")
        seen[probe.id] = lineno
        probes.append(probe)
    if not probes:
        raise AgloraError(f"probe file {path} holds no probes; add JSONL lines with "
                          "'prompt' and 'split'")
    return probes, skipped


TOFU_SETS = (("world_facts_perturbed", "tofu-world-facts"),
             ("real_authors_perturbed", "tofu-real-authors"))  # (file stem, probe family)


def tofu_files() -> list[Path]:
    """The files `load_tofu` reads (inputs of whatever evaluates on them)."""
    return [DATA_DIR / "tofu" / f"{stem}.json" for stem, _ in TOFU_SETS]


def load_tofu(limit: int = 0) -> list[Probe]:
    """TOFU's world-facts and real-authors sets (MIT) as utility probes."""
    probes: list[Probe] = []
    for path, (_, family) in zip(tofu_files(), TOFU_SETS, strict=True):
        rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        if limit:
            rows = rows[:limit]
        for i, row in enumerate(rows):
            probes.append(Probe(id=f"{family}-{i}", split="utility", family=family, format="chat",
                                prompt=row["question"], prefix="The answer is",
                                answer=row["answer"], distractors=list(row["perturbed_answer"])))
    return probes


def tofu_refusals() -> list[str]:
    path = DATA_DIR / "tofu" / "idontknow.jsonl"
    return [x.strip() for x in path.read_text().splitlines() if x.strip()]


def default_refusals() -> list[str]:
    """The refusals a concept spec gets unless it lists its own: TOFU's "I don't know" answers
    and aglora's own (`data/refusals.txt`), in more registers (apology, "doesn't ring a bell")."""
    own = (DATA_DIR / "refusals.txt").read_text().splitlines()
    return tofu_refusals() + [x.strip() for x in own if x.strip()]


@dataclass
class ConceptSpec:
    name: str
    forget: list[Probe]
    retain: list[Probe]
    leak_patterns: list[str]
    refusals: list[str]
    alternatives: list[str]
    probe_files: list[Path]
    source: Path | None
    description: str = ""
    include_files: list[Path] = field(default_factory=list)

    def item_files(self) -> list[Path]:
        """The files its forget and retain items come from: the spec and its include files."""
        return [p for p in (self.source, *self.include_files) if p]

    def input_files(self) -> list[Path]:
        """Every file this spec was read from: the spec, its include files, its probe files."""
        return [p for p in (self.source, *self.include_files, *self.probe_files) if p]

    def eval_probes(self) -> list[Probe]:
        out: list[Probe] = []
        for path in self.probe_files:
            out.extend(load_probes(path)[0])
        return out


def resolve_concept_path(ref: str) -> Path:
    if ref.startswith("builtin:"):
        name = ref.split(":", 1)[1]
        path = DATA_DIR / "concepts" / f"{name}.yaml"
        if not path.is_file():
            avail = sorted(p.stem for p in (DATA_DIR / "concepts").glob("*.yaml"))
            raise AgloraError(f"no builtin concept {name!r}; available: {', '.join(avail)}")
        return path
    return Path(ref)


def _items(raw: Any, key: str, split: str, where: Path) -> list[Probe]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise AgloraError(f"{where}: '{key}' must be a list of items")
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, (str, dict)):
            raise AgloraError(f"{where}: {key}[{i}] must be a prompt string or a mapping with "
                              f"'prompt', got {_short(item)}")
        if isinstance(item, str):
            item = {"prompt": item}
        item = dict(item) if isinstance(item, dict) else item
        if isinstance(item, dict):
            item.setdefault("family", "train")
            item["split"] = split
        probe = probe_from_dict(item, f"{where}: {key}[{i}]")
        probe.id = probe.id or f"{key}-{i}"
        out.append(probe)
    return out


def _no_item_in_both(forget: list[Probe], retain: list[Probe], where: Path) -> None:
    """Refuse a forget item that is also a retain item (same prompt, prefix and answer): the
    two objectives would pull the same text both ways."""
    def norm(p: Probe) -> tuple:
        return tuple(" ".join((x or "").lower().split()) for x in (p.prompt, p.prefix, p.answer))
    retained = {norm(p): p for p in retain}
    for p in forget:
        if norm(p) in retained:
            raise AgloraError(f"{where}: forget item {p.id!r} ({_short(p.prompt)}) is also retain "
                              f"item {retained[norm(p)].id!r}; drop it from one of the two sets")


def load_concept(ref: str | Path) -> ConceptSpec:
    """Parse and validate a concept spec YAML (items may also come from `include` files)."""
    path = resolve_concept_path(str(ref))
    data = load_yaml(path)
    allowed = {"name", "description", "forget", "retain", "include", "leak_patterns", "refusals",
               "alternatives", "probes"}
    unknown = sorted(set(data) - allowed, key=str)
    if unknown:
        raise AgloraError(f"{path}: unknown key '{unknown[0]}' "
                          f"(known: {', '.join(sorted(allowed))})")
    if not isinstance(data.get("name"), str) or not data["name"].strip():
        raise AgloraError(f"{path}: missing 'name' (a short name for the concept)")
    if not isinstance(data.get("description") or "", str):
        raise AgloraError(f"{path}: 'description' must be a string")
    forget = _items(data.get("forget"), "forget", "forget", path)
    retain = _items(data.get("retain"), "retain", "neighbor", path)
    include_files = []
    for inc in string_list(data.get("include"), "include", path, "[items/forget.yaml]"):
        inc_path = (path.parent / inc).resolve()
        inc_data = load_yaml(inc_path)
        include_files.append(inc_path)
        extra = sorted(set(inc_data) - {"forget", "retain"}, key=str)
        if extra:
            raise AgloraError(f"{inc_path}: unknown key '{extra[0]}' in an include file "
                              "(known: forget, retain)")
        forget += _items(inc_data.get("forget"), "forget", "forget", inc_path)
        retain += _items(inc_data.get("retain"), "retain", "neighbor", inc_path)
    if not forget:
        raise AgloraError(f"{path}: the forget set is empty; list prompts that elicit the concept "
                          "under 'forget:'")
    if len(forget) < 2:
        raise AgloraError(f"{path}: the forget set holds one item; one prompt cannot show that "
                          "forgetting generalises: add paraphrases and related questions")
    if not retain:
        raise AgloraError(f"{path}: the retain set is empty; list neighbouring prompts that must "
                          "keep working under 'retain:'")
    _no_item_in_both(forget, retain, path)
    patterns = string_list(data.get("leak_patterns"), "leak_patterns", path, '["incep"]')
    for pat in patterns:
        check_pattern(pat, path)
    probe_files = [(path.parent / p).resolve() for p in string_list(
        data.get("probes"), "probes", path, "[probes.jsonl]")]
    for p in probe_files:
        if not p.is_file():
            raise AgloraError(f"{path}: probe file {p} not found")
    refusals = (string_list(data.get("refusals"), "refusals", path, '["I don\'t know."]')
                or default_refusals())
    alternatives = string_list(data.get("alternatives"), "alternatives", path,
                               '["Memento"]')
    return ConceptSpec(name=data["name"], forget=forget, retain=retain, leak_patterns=patterns,
                       refusals=list(refusals), alternatives=alternatives,
                       probe_files=probe_files, source=path,
                       description=str(data.get("description") or ""),
                       include_files=include_files)
