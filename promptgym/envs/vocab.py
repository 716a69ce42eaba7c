"""Candidate vocabularies for discrete prompts: what each discrete action index means.

BDPL (Diao et al., TMLR 2023) does not let its policy choose among the LM's whole vocabulary: each
prompt position picks one of ~200 *task-specific* n-grams, ranked by pointwise mutual information
(PMI) on the task's text. A small, salient action set is what makes policy-gradient search feasible
under a budget of a few thousand API calls. This module builds such lists; ``DiscretePromptEnv`` and
``TokenwisePromptEnv`` use them as their action spaces.

Text source
    The task's ``pool`` split (its full labelled training set) for the tasks whose pool the benchmark
    mirrors (SST-2, MRPC, RTE: :data:`POOL_TASKS`), otherwise the 16-shot ``train`` split of
    ``seed``. The list therefore depends on ``seed`` only for tasks without a pool. Other tasks never
    read a pool, even from the Hugging Face hub (whose "pool" would be the full training set of any
    task, e.g. 364k QQP pairs), so that a task reads the same kind of source from the local mirror
    as from the hub. For pair tasks both ``text`` and ``text_pair`` are read; no n-gram crosses from one
    to the other. No dev or test row is ever read.

Words and n-grams
    Text is lower-cased, curly apostrophes are straightened, and words are runs of letters/digits
    with inner apostrophes (``don't``, ``n't``, ``l'homme``) -- see :func:`words`. A clitic split off
    by the treebank tokenisation (``it 's``) is dropped, and so is any token without a letter
    (numbers, punctuation). The corpora's escaping artefacts are undone first, or they would become
    "words": Yelp's literal ``\\n`` (which made ``nthe``), AG News's ``\\$`` and its HTML entities
    without their ``&`` (``isn #39;t``), and ordinary HTML entities. n-grams are 1..``max_n``
    consecutive words.

PMI ranking (``method="pmi"``)
    Notation: ``N`` rows, ``N_y`` rows of label ``y`` with prior ``pi_y = N_y / N``; ``df(g)`` rows
    containing n-gram ``g`` (``df(g, y)`` of them labelled ``y``); ``c(x)`` occurrences of ``x``
    and ``T`` the number of words in the corpus. ``g`` is a candidate when

    1. *frequency floor*: ``df(g) >= ceil(N / 5000)`` (1 row for every 16-shot split and for the MRPC
       and RTE pools; 14 rows for SST-2's 67k-row pool), so that a large corpus cannot fill the list
       with n-grams seen once or twice;
    2. *collocation* (n >= 2 only): every split of ``g`` into a left and right part ``a b`` has a
       positive word-association PMI ``log [c(g) T / (c(a) c(b))] > 0`` -- the words of the n-gram
       occur together more often than chance (TDNA/BDPL's criterion for an n-gram), which removes
       accidental sequences such as "movie the";
    3. *label association*: its score below is positive.

    The score is the label-association PMI of ``g`` with its best label,

        ``score(g) = max_y log [ p~(y | g) / pi_y ]``  with
        ``p~(y | g) = (df(g, y) + m pi_y) / (df(g) + m)``,  ``m = min(PRIOR_STRENGTH = 20, N / 8)``,

    i.e. ``log p(g | y) / p(g)`` (by Bayes' rule) with ``p(y | g)`` shrunk toward the prior by
    ``m`` pseudo-rows. Why this form: raw PMI is largest for n-grams seen once in a single class, so
    a raw ranking is all rare junk; shrinking toward the *prior* (not toward uniform, as add-one
    would) keeps an n-gram with no evidence at score 0 and lets evidence grow with ``df``, so a word
    like " bad" (SST-2: 886 rows, ~90% negative) outranks a typo seen in 3 negative rows. The prior
    is worth at most an eighth of the corpus (m = 4 for a 32-row 16-shot split): with a full 20
    pseudo-rows, a stop word seen 12 vs 5 times would outrank every content word of such a small
    split, whose counts can never outweigh the prior. The cap of
    the score, ``log 1 / pi_y``, is larger for rarer labels; so that an unbalanced corpus does not
    fill the list with the minority class, each n-gram is assigned to its best label, n-grams are
    ranked *within* their label by ``(-score, -df, -count, n, text)``, and the labels take turns
    (round-robin in label order, each turn adding one candidate that passes the tokeniser filter).
    Every label is thus equally represented, which matters for 14-class DBPedia.

    When fewer than ``k`` n-grams qualify, the list is filled up from the frequency ranking
    (skipping n-grams already in it) and ``source`` says ``"pmi+frequency:..."``.

Frequency ranking (``method="frequency"``)
    All n-grams by ``(-count, text)``: stop words included, the "no task knowledge" baseline.

Candidates
    Each n-gram ``g`` becomes the text ``" " + g``: the leading space makes causal BPE tokenisers
    (GPT-2, SmolLM2) encode it as word-initial tokens, as it will appear after other prompt tokens.
    Its ``token_ids`` are ``encode(text)``; n-grams whose encoding is empty or longer than
    :data:`MAX_TOKENS` tokens are skipped. The result is deterministic (all ties are broken by text).

Cost
    The n-gram statistics and rankings are cached per (task, text source, resolved data directory,
    ``max_n``), so only the first call for a corpus pays for reading it (~1.5 s for SST-2's pool on
    one core); later calls only tokenise the ~k chosen n-grams (a few ms). The tokenisation is not
    cached here: ``encode`` is a caller's function (``LocalLM.encode`` caches its own results).
"""

from __future__ import annotations

import html
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType

import numpy as np

from promptgym.envs.config import VocabMethod
from promptgym.errors import InvalidActionError, SplitUnavailableError, UnknownSeedError
from promptgym.tasks.catalog import get_task
from promptgym.tasks.data import SEEDS, load_split
from promptgym.tasks.data import data_dir as resolve_data_dir
from promptgym.tasks.spec import TaskSpec
from promptgym.typed_config import choices

METHODS: tuple[str, ...] = choices(VocabMethod)
POOL_TASKS: frozenset[str] = frozenset({"sst2", "mrpc", "rte"})
MAX_TOKENS = 4
PRIOR_STRENGTH = 20.0
ROWS_PER_MIN_DF = 5000

_WORD_RE = re.compile(r"(?<![\w'])[^\W_]+(?:'[^\W_]+)*")
_DIGIT_RE = re.compile(r"\d")
_LETTER_RE = re.compile(r"[^\W\d_]")
_BACKSLASH_RE = re.compile(r"\\[nrt]?")          # Yelp's literal "\n", AG News's "\$"
_BARE_ENTITY_RE = re.compile(r"(?<!&)#(\d{2,5});")  # AG News's "isn #39;t" (an entity that lost its "&")


def check_indices(action: object, k: int, length: int | None = None) -> np.ndarray:
    """Validate candidate indices in ``[0, k)``: the one rule for every discrete action.

    ``action`` is a 1-D sequence or array of indices (``length`` of them, when given) or one
    index. Integer dtypes are accepted, and so are floats holding whole numbers (numpy and SB3
    often hand actions back as floats); booleans, fractions, NaN/inf, strings, ragged or nested
    lists are refused with :class:`~promptgym.errors.InvalidActionError`, and negative indices are
    never read from the end.
    """
    want = f"{length} integers" if length is not None else "integer indices"
    try:
        arr = np.asarray(action)
    except (TypeError, ValueError):  # ragged nested lists and the like
        raise InvalidActionError(f"a discrete prompt action must be {want} in [0, {k}), got {action!r}") from None
    if arr.ndim == 0 and length is None and arr.dtype.kind in "iuf":
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise InvalidActionError(f"a discrete prompt action must be 1-D ({want} in [0, {k})), got shape {arr.shape}")
    if length is not None and arr.shape != (length,):
        raise InvalidActionError(f"action must have shape ({length},), got {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)  # an empty prompt (np.asarray([]) is float64)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise InvalidActionError("action must hold integers (got NaN/inf or fractional values)")
    elif arr.dtype.kind not in "iu":
        raise InvalidActionError(f"action must hold integer indices into {k} candidates, got {action!r} "
                                 f"(dtype {arr.dtype})")
    out = arr.astype(np.int64)
    if np.any(out < 0) or np.any(out >= k):
        bad = [int(i) for i in out if not 0 <= i < k]
        raise InvalidActionError(f"action indices {bad[:5]} are outside 0..{k - 1} "
                                 f"(the candidate list has {k} entries)")
    return out


@dataclass(frozen=True)
class CandidateList:
    """The meaning of each discrete action index: a text and its tokenisation by the LM.

    ``texts[i]`` is the n-gram of action ``i`` with its leading space (e.g. ``" not bad"``),
    ``token_ids[i]`` its non-empty tokenisation, and ``source`` says how the list was built and from
    which split (``"pmi:sst2/pool"``, ``"frequency:qqp/train-13"``, ``"pmi+frequency:cola/train-13"``
    when PMI candidates ran out and frequent n-grams filled the list up).
    """

    texts: tuple[str, ...]
    token_ids: tuple[tuple[int, ...], ...]
    source: str

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.token_ids):
            raise ValueError(f"{len(self.texts)} texts but {len(self.token_ids)} tokenisations")
        if not self.texts:
            raise ValueError("a candidate list needs at least one candidate")
        for text, ids in zip(self.texts, self.token_ids):
            if not ids:
                raise ValueError(f"candidate {text!r} has an empty tokenisation")

    def __len__(self) -> int:
        return len(self.texts)

    def prompt_ids(self, action: Sequence[int] | np.ndarray | int) -> tuple[int, ...]:
        """Concatenated token ids of the candidates chosen by ``action``, in order.

        ``action`` is a sequence (or 1-D integer array) of indices; a single integer is one index.
        Raises :class:`~promptgym.errors.InvalidActionError` (never ``IndexError``) on negative,
        out-of-range or non-integer indices -- negative indices are not read from the end.
        """
        out: list[int] = []
        for i in check_indices(action, len(self)):
            out.extend(self.token_ids[i])
        return tuple(out)

    def prompt_text(self, action: Sequence[int] | np.ndarray | int) -> str:
        """The prompt chosen by ``action`` as text, e.g. ``" great not bad"`` (for logs and leaderboards)."""
        return "".join(self.texts[i] for i in check_indices(action, len(self)))


def words(text: str) -> list[str]:
    """Lower-cased words of ``text``: letters/digits with inner apostrophes, at least one letter."""
    if "\\" in text:
        text = _BACKSLASH_RE.sub(" ", text)
    if "#" in text:
        text = _BARE_ENTITY_RE.sub(lambda m: chr(int(m.group(1))) if int(m.group(1)) < 0x110000 else " ", text)
    text = html.unescape(text).lower().replace("\u2019", "'").replace("_", " ")
    found = _WORD_RE.findall(text)
    if not _DIGIT_RE.search(text):
        return found  # without digits every word has a letter (the common case: skip the check)
    return [w for w in found if _LETTER_RE.search(w)]


def _ngrams(tokens: Sequence[str], max_n: int) -> list[str]:
    grams = list(tokens)
    for n in range(2, max_n + 1):
        grams.extend(" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
    return grams


@dataclass(frozen=True)
class NgramStats:
    """Counts of every n-gram (n <= ``max_n``) of one task's text source; read-only mappings."""

    source: str                                   # "sst2/pool" or "qqp/train-13"
    max_n: int
    label_rows: tuple[int, ...]                   # N_y: rows per label
    num_words: int                                # T
    counts: Mapping[str, int]                     # c(g): occurrences
    label_doc_counts: tuple[Mapping[str, int], ...]  # df(g, y): rows of label y containing g

    @property
    def num_rows(self) -> int:
        return sum(self.label_rows)

    def doc_count(self, gram: str) -> int:
        return sum(d.get(gram, 0) for d in self.label_doc_counts)


def _validate(k: int, method: str, max_n: int, seed: int) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown candidate method {method!r}; methods are {', '.join(METHODS)}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k (the number of candidates) must be a positive integer, got {k!r}")
    if isinstance(max_n, bool) or not isinstance(max_n, (int, np.integer)) or max_n < 1:
        raise ValueError(f"max_n (the longest n-gram, in words) must be a positive integer, got {max_n!r}")
    if seed not in SEEDS:
        raise UnknownSeedError(f"unknown k-shot seed {seed!r}; published splits use seeds {SEEDS}")


def _root_key(data_dir: str | None) -> str | None:
    root = resolve_data_dir(data_dir)  # raises DataNotFoundError for a missing directory
    return None if root is None else str(root.resolve())


def ngram_stats(task: str | TaskSpec, seed: int = 13, max_n: int = 2, data_dir: str | None = None) -> NgramStats:
    """The (cached) n-gram statistics of ``task``'s text source (pool where mirrored, else train-``seed``).

    The counts hold every n-gram up to ``max(max_n, 2)`` words (one pass serves max_n 1 and 2).
    """
    spec = get_task(task)
    _validate(1, "pmi", max_n, seed)
    return _stats_for(spec.name, int(seed), int(max_n), _root_key(data_dir))


def _stats_for(name: str, seed: int, max_n: int, root: str | None) -> NgramStats:
    max_n = max(max_n, 2)  # unigram and bigram lists share one pass over the corpus
    if name in POOL_TASKS:
        try:
            return _stats(name, "pool", None, max_n, root)
        except SplitUnavailableError:
            pass
    return _stats(name, "train", seed, max_n, root)


@lru_cache(maxsize=32)
def _stats(name: str, split: str, seed: int | None, max_n: int, root: str | None) -> NgramStats:
    data = load_split(name, split, seed, root)
    table = data.rows.with_format("arrow")[:]  # column access through Arrow: ~100x faster than rows["text"]
    texts = table.column("text").to_pylist()
    pairs = table.column("text_pair").to_pylist() if "text_pair" in table.column_names else [None] * len(texts)
    labels = table.column("label").to_pylist()
    num_labels = data.task.num_labels
    repeats: Counter[str] = Counter()  # occurrences beyond the first in a row: c(g) = df(g) + repeats
    docs = [Counter() for _ in range(num_labels)]
    label_rows = [0] * num_labels
    num_words = 0
    for text, pair, label in zip(texts, pairs, labels):
        grams: list[str] = []
        for part in (text, pair):
            if part:
                tokens = words(part)
                num_words += len(tokens)
                grams.extend(_ngrams(tokens, max_n))
        unique = set(grams)
        docs[label].update(unique)
        if len(unique) < len(grams):
            repeats.update(grams)
            repeats.subtract(unique)
        label_rows[label] += 1
    counts = Counter(+repeats)  # one Counter pass per row instead of two
    for d in docs:
        counts.update(d)
    source = f"{name}/{split}" if seed is None else f"{name}/{split}-{seed}"
    return NgramStats(source, max_n, tuple(label_rows), num_words, MappingProxyType(dict(counts)),
                      tuple(MappingProxyType(dict(d)) for d in docs))


def _collocation_pmi(gram: str, counts: Mapping[str, int], num_words: int) -> float:
    """min over splits ``a|b`` of ``log c(g) T / (c(a) c(b))``; +inf for a single word."""
    parts = gram.split(" ")
    best = math.inf
    for i in range(1, len(parts)):
        left, right = " ".join(parts[:i]), " ".join(parts[i:])
        best = min(best, math.log(counts[gram] * num_words / (counts[left] * counts[right])))
    return best


@lru_cache(maxsize=32)
def _pmi_ranking(name: str, seed: int, max_n: int, root: str | None) -> tuple[tuple[str, ...], ...]:
    """Per label, the n-grams whose best label it is, best first (see the module docstring)."""
    stats = _stats_for(name, seed, max_n, root)
    n_rows = stats.num_rows
    priors = [r / n_rows if n_rows else 0.0 for r in stats.label_rows]
    min_df = max(1, math.ceil(n_rows / ROWS_PER_MIN_DF))
    m = min(PRIOR_STRENGTH, n_rows / 8)
    ranked: list[list[tuple[float, int, int, int, str]]] = [[] for _ in priors]
    for gram, count in stats.counts.items():
        if gram.count(" ") >= max_n:
            continue
        per_label = [d.get(gram, 0) for d in stats.label_doc_counts]
        df = sum(per_label)
        if df < min_df:
            continue
        if " " in gram and _collocation_pmi(gram, stats.counts, stats.num_words) <= 0:
            continue
        best_label, best = -1, 0.0
        for y, (dfy, prior) in enumerate(zip(per_label, priors)):
            if prior <= 0:
                continue
            score = math.log((dfy + m * prior) / (df + m) / prior)
            if score > best:
                best_label, best = y, score
        if best_label >= 0:
            ranked[best_label].append((-best, -df, -count, gram.count(" "), gram))
    return tuple(tuple(g for *_, g in sorted(r)) for r in ranked)


@lru_cache(maxsize=32)
def _frequency_ranking(name: str, seed: int, max_n: int, root: str | None) -> tuple[str, ...]:
    stats = _stats_for(name, seed, max_n, root)
    return tuple(g for _, g in sorted((-c, g) for g, c in stats.counts.items() if g.count(" ") < max_n))


def _round_robin(lists: Sequence[Sequence[str]], accept: Callable[[str], bool]) -> Iterator[str]:
    """Yield accepted items, one per list in turn; a list's rejected items do not use up its turn."""
    iterators = [iter(lst) for lst in lists]
    while iterators:
        alive = []
        for it in iterators:
            for item in it:
                if accept(item):
                    yield item
                    alive.append(it)
                    break
        iterators = alive


def build_candidates(task: str | TaskSpec, encode: Callable[[str], Sequence[int]], k: int = 200, seed: int = 13,
                     method: str = "pmi", max_n: int = 2, data_dir: str | None = None) -> CandidateList:
    """The ``k`` candidate n-grams of ``task`` for discrete prompts, tokenised by ``encode``.

    ``encode`` maps a text to token ids without special tokens (``LocalLM.encode``, or
    ``lambda s: tok(s, add_special_tokens=False)["input_ids"]``). ``method`` is ``"pmi"``
    (task-salient n-grams, BDPL-style; filled up with frequent n-grams if too few qualify) or
    ``"frequency"`` (most frequent n-grams). The ranking, the text source and the filters are
    documented in this module's docstring. ``data_dir`` defaults to ``PROMPTGYM_DATA_DIR``.

    Raises ``ValueError`` for ``k < 1``, ``max_n < 1``, an unknown ``method`` or a corpus with fewer
    than ``k`` usable n-grams; ``UnknownTaskError`` / ``UnknownSeedError`` for unknown names.
    """
    spec = get_task(task)
    _validate(k, method, max_n, seed)
    key = (spec.name, int(seed), int(max_n), _root_key(data_dir))
    source = _stats_for(*key).source

    texts: list[str] = []
    token_ids: list[tuple[int, ...]] = []
    seen: set[str] = set()

    def accept(gram: str) -> bool:
        if gram in seen:
            return False
        seen.add(gram)
        text = " " + gram
        ids = tuple(int(i) for i in encode(text))
        if not 1 <= len(ids) <= MAX_TOKENS:
            return False
        texts.append(text)
        token_ids.append(ids)
        return True

    def fill(grams: Iterable[str]) -> bool:
        """Take grams until k are accepted; True when any was taken."""
        before = len(texts)
        for _ in grams:
            if len(texts) >= k:
                break
        return len(texts) > before

    label = method
    if method == "pmi":
        fill(_round_robin(_pmi_ranking(*key), accept))
        if len(texts) < k and fill(g for g in _frequency_ranking(*key) if accept(g)):
            label = "pmi+frequency"
    else:
        fill(g for g in _frequency_ranking(*key) if accept(g))
    if len(texts) < k:
        raise ValueError(
            f"{source} yields only {len(texts)} usable n-grams (n <= {max_n}, <= {MAX_TOKENS} tokens) "
            f"but k={k} were asked for; lower k or raise max_n"
        )
    return CandidateList(tuple(texts), tuple(token_ids), f"{label}:{source}")


__all__ = ["METHODS", "MAX_TOKENS", "POOL_TASKS", "PRIOR_STRENGTH", "CandidateList", "NgramStats",
           "build_candidates", "ngram_stats", "words"]
