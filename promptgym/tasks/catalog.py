"""The specs of the 11 tasks.

Verbalizers follow BBT/BDPL/LM-BFF choices (SST-2/Yelp great/terrible, AG News
World/Sports/Business/Tech, NLI Yes/Maybe/No, CoLA correct/incorrect). Causal templates put the
answer at the next token after the cue; each label word is a single token with a leading space
in SmolLM2's tokenizer (checked by a test). The default SST-2 template is the *weak* BBT one
("... It was"), on purpose: it leaves room for a learned prompt to help. The stronger
"Review: ... Sentiment:" template (zero-shot 78.1% with SmolLM2) is available as ``extra_templates["review"]``.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from promptgym.errors import ConfigError, UnknownTaskError
from promptgym.plugins import TASKS_GROUP, Plugin, load_all, the_plugin
from promptgym.tasks.spec import HubSource, TaskSpec, Template

_NLI3 = ("Yes", "Maybe", "No")


def _single(body: str, cue: str, masked_cue: str, words: tuple[str, ...]) -> tuple[Template, Template]:
    return Template(body, cue, words), Template(body, masked_cue, words)


def _pair(body: str, cue: str, words: tuple[str, ...]) -> tuple[Template, Template]:
    """A sentence-pair task's causal template and its masked one ("{text} ? {mask}, {text_pair}", LM-BFF's)."""
    return Template(body, cue, words), Template("{text} ?", " {mask}, {text_pair}", words)


_SPECS: list[TaskSpec] = []


def _add(spec: TaskSpec) -> None:
    _SPECS.append(spec)


_sst_c, _sst_m = _single("{text}", " It was", " It was {mask}.", ("terrible", "great"))
_add(TaskSpec(
    "sst2", "SST2", ("negative", "positive"), False, "accuracy", _sst_c, _sst_m,
    HubSource("glue", "sst2", "sentence", None),
    "Stanford Sentiment Treebank, binary movie-review sentiment.",
    {"review": Template("Review: {text}", "\nSentiment:", ("negative", "positive"))},
))
_yelp_c, _yelp_m = _single("{text}", " It was", " It was {mask}.", ("terrible", "great"))
_add(TaskSpec(
    "yelpp", "YelpP", ("negative", "positive"), False, "accuracy", _yelp_c, _yelp_m,
    HubSource("yelp_polarity", None, "text", None, test_split="test"),
    "Yelp review polarity.",
))
_ag_c, _ag_m = _single("{text}", "\nTopic:", "\nTopic: {mask}.", ("World", "Sports", "Business", "Tech"))
_add(TaskSpec(
    "agnews", "AGNews", ("World", "Sports", "Business", "Sci/Tech"), False, "accuracy", _ag_c, _ag_m,
    HubSource("ag_news", None, "text", None, test_split="test"),
    "AG News topic classification (title + description).",
))
_DBP_WORDS = ("Company", "Education", "Artist", "Athlete", "Office", "Transportation", "Building",
              "Natural", "Village", "Animal", "Plant", "Album", "Film", "Written")
_dbp_c, _dbp_m = _single("{text}", "\nCategory:", "\nCategory: {mask}.", _DBP_WORDS)
_add(TaskSpec(
    "dbpedia", "DBPedia",
    ("Company", "EducationalInstitution", "Artist", "Athlete", "OfficeHolder", "MeanOfTransportation",
     "Building", "NaturalPlace", "Village", "Animal", "Plant", "Album", "Film", "WrittenWork"),
    False, "accuracy", _dbp_c, _dbp_m,
    HubSource("dbpedia_14", None, "content", None, test_split="test"),
    "DBPedia ontology, 14 classes.",
))
_add(TaskSpec(
    "mrpc", "MRPC", ("not_equivalent", "equivalent"), True, "f1",
    *_pair("Sentence 1: {text}\nSentence 2: {text_pair}", "\nSame meaning? Answer:", ("No", "Yes")),
    HubSource("glue", "mrpc", "sentence1", "sentence2"),
    "Microsoft Research Paraphrase Corpus; metric F1 of 'equivalent'.",
))
_add(TaskSpec(
    "rte", "RTE", ("entailment", "not_entailment"), True, "accuracy",
    Template("{text}\nQuestion: {text_pair}", "\nTrue or false? Answer:", ("True", "False")),
    Template("{text} ?", " {mask}, {text_pair}", ("Yes", "No")),  # the masked words differ from the causal ones
    HubSource("glue", "rte", "sentence1", "sentence2"),
    "Recognising Textual Entailment.",
))
for _name, _env, _hub in (
    ("snli", "SNLI", HubSource("snli", None, "premise", "hypothesis", test_split="test")),
    ("mnli", "MNLI", HubSource("glue", "mnli", "premise", "hypothesis", test_split="validation_matched")),
):
    _add(TaskSpec(
        _name, _env, ("entailment", "neutral", "contradiction"), True, "accuracy",
        *_pair("Premise: {text}\nHypothesis: {text_pair}", "\nDoes the premise imply the hypothesis? Answer:",
               _NLI3),
        _hub,
        "Natural language inference, 3 classes.",
    ))
_add(TaskSpec(
    "qnli", "QNLI", ("entailment", "not_entailment"), True, "accuracy",
    *_pair("Question: {text}\nSentence: {text_pair}", "\nDoes the sentence answer the question? Answer:",
           ("Yes", "No")),
    HubSource("glue", "qnli", "question", "sentence"),
    "Question-answering NLI.",
))
_add(TaskSpec(
    "qqp", "QQP", ("not_duplicate", "duplicate"), True, "f1",
    *_pair("Question 1: {text}\nQuestion 2: {text_pair}", "\nSame question? Answer:", ("No", "Yes")),
    HubSource("glue", "qqp", "question1", "question2", test_split=None),
    "Quora Question Pairs; metric F1 of 'duplicate'; no test split is mirrored.",
))
_add(TaskSpec(
    "cola", "CoLA", ("unacceptable", "acceptable"), False, "matthews_correlation",
    Template("{text}", "\nThis sentence is grammatically", ("incorrect", "correct")),
    Template("{text}", " This is {mask}.", ("incorrect", "correct")),
    HubSource("glue", "cola", "sentence", None),
    "Corpus of Linguistic Acceptability; metric Matthews correlation.",
))

#: every task by name: the built-in ones, then those registered (:func:`register_task`, task plugins)
TASKS: dict[str, TaskSpec] = {s.name: s for s in _SPECS}
#: the built-in tasks' names
TASK_NAMES: tuple[str, ...] = tuple(TASKS)
#: called with each task registered after import; the env registration adds the task's env ids
TASK_LISTENERS: list[Callable[[TaskSpec], None]] = []
#: task name -> the installed distribution whose ``promptgym.tasks`` entry point registered it
TASK_PLUGINS: dict[str, str] = {}


def _lookup(key: str) -> TaskSpec | None:
    if key in TASKS:
        return TASKS[key]
    return next((spec for spec in TASKS.values() if spec.env_name.lower() == key), None)


def get_task(name: str | TaskSpec) -> TaskSpec:
    """Look a task up by its name ("sst2") or env name ("SST2"), case-insensitively.

    A name that is not registered is looked for among the installed task plugins (``promptgym.tasks``
    entry points, :mod:`promptgym.plugins`), which are loaded only then.
    """
    if isinstance(name, TaskSpec):
        return name
    key = str(name).lower()
    spec = _lookup(key)
    if spec is None:
        plugin = the_plugin(TASKS_GROUP, key)
        spec = None if plugin is None else _register_plugin(plugin)
    if spec is None:
        raise UnknownTaskError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return spec


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add a task to the catalog; its env ids (``Prompt<env_name>-v0``, ...) are registered with it.

    A task never replaces another: a name or env name already taken (by either) is refused, as are
    names an env id cannot hold. The splits are read as a built-in task's: ``<data dir>/<name>/...``
    (``promptgym.tasks.data``), or ``spec.hub`` when no data directory is set.
    """
    if not isinstance(spec, TaskSpec):
        raise ConfigError(f"register_task takes a promptgym.tasks.TaskSpec, got {type(spec).__name__}")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", spec.name):
        raise ConfigError(f"task name must be lower-case letters, digits or _, got {spec.name!r}")
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", spec.env_name):
        raise ConfigError(f"task {spec.name!r}: env_name must be letters and digits (it goes in the env id "
                          f"Prompt<env_name>-v0), got {spec.env_name!r}")
    for key in (spec.name, spec.env_name.lower()):
        taken = _lookup(key)
        if taken is not None:
            raise ConfigError(f"task {spec.name!r} (env name {spec.env_name!r}) clashes with the registered task "
                              f"{taken.name!r} (env name {taken.env_name!r}); choose other names")
    for template in (spec.causal, spec.masked, *spec.extra_templates.values()):
        if len(template.verbalizers) != spec.num_labels:
            raise ConfigError(f"task {spec.name!r}: each template needs one verbalizer per label "
                              f"({spec.num_labels}), got {len(template.verbalizers)}")
    TASKS[spec.name] = spec
    for listener in TASK_LISTENERS:
        listener(spec)
    return spec


def _register_plugin(plugin: Plugin) -> TaskSpec:
    """Load a task plugin (a TaskSpec, or a function returning one) and register it under its entry point's name."""
    obj = plugin.load()
    if callable(obj) and not isinstance(obj, TaskSpec):
        try:
            obj = obj()
        except Exception as exc:  # a plugin's factory may raise anything; one line, never a traceback
            raise plugin.error(f"its factory raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(obj, TaskSpec):
        raise plugin.error(f"must name a promptgym.tasks.TaskSpec or a function returning one, "
                           f"got {type(obj).__name__}")
    if obj.name != plugin.name:
        raise plugin.error(f"the entry point's name must be the task's name, {obj.name!r}")
    try:
        register_task(obj)
    except ConfigError as exc:
        raise plugin.error(str(exc)) from None
    TASK_PLUGINS[obj.name] = plugin.dist
    return obj


def load_task_plugins() -> list[str]:
    """Register every installed task plugin not registered yet (for ``promptgym list`` and unknown env ids).

    Returns one line per plugin that could not be used (it fails to load, or its name is taken and it is
    ignored); the others are registered, with their env ids.
    """
    def taken(plugin: Plugin) -> str | None:
        if plugin.name not in TASKS:
            return None
        return "" if TASK_PLUGINS.get(plugin.name) == plugin.dist else "a task of that name is already registered"

    return load_all(TASKS_GROUP, taken, _register_plugin)
