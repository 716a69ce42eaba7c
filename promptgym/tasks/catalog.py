"""The specs of the 11 tasks.

Verbalizers follow BBT/BDPL/LM-BFF choices (SST-2/Yelp great/terrible, AG News
World/Sports/Business/Tech, NLI Yes/Maybe/No, CoLA correct/incorrect). Causal templates put the
answer at the next token after the cue; each label word is a single token with a leading space
in SmolLM2's tokenizer (checked by a test). The default SST-2 template is the *weak* BBT one
("... It was"), on purpose: it leaves room for a learned prompt to help. The stronger
"Review: ... Sentiment:" template (zero-shot 78.1% with SmolLM2) is available as ``extra_templates["review"]``.
"""

from __future__ import annotations

from promptgym.errors import UnknownTaskError
from promptgym.tasks.spec import HubSource, TaskSpec, Template

_NLI3 = ("Yes", "Maybe", "No")


def _single(body: str, cue: str, masked_cue: str, words: tuple[str, ...]) -> tuple[Template, Template]:
    return Template(body, cue, words), Template(body, masked_cue, words)


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
    Template("Sentence 1: {text}\nSentence 2: {text_pair}", "\nSame meaning? Answer:", ("No", "Yes")),
    Template("{text} ?", " {mask}, {text_pair}", ("No", "Yes")),
    HubSource("glue", "mrpc", "sentence1", "sentence2"),
    "Microsoft Research Paraphrase Corpus; metric F1 of 'equivalent'.",
))
_add(TaskSpec(
    "rte", "RTE", ("entailment", "not_entailment"), True, "accuracy",
    Template("{text}\nQuestion: {text_pair}", "\nTrue or false? Answer:", ("True", "False")),
    Template("{text} ?", " {mask}, {text_pair}", ("Yes", "No")),
    HubSource("glue", "rte", "sentence1", "sentence2"),
    "Recognising Textual Entailment.",
))
for _name, _env, _hub in (
    ("snli", "SNLI", HubSource("snli", None, "premise", "hypothesis", test_split="test")),
    ("mnli", "MNLI", HubSource("glue", "mnli", "premise", "hypothesis", test_split="validation_matched")),
):
    _add(TaskSpec(
        _name, _env, ("entailment", "neutral", "contradiction"), True, "accuracy",
        Template("Premise: {text}\nHypothesis: {text_pair}", "\nDoes the premise imply the hypothesis? Answer:",
                 _NLI3),
        Template("{text} ?", " {mask}, {text_pair}", _NLI3),
        _hub,
        "Natural language inference, 3 classes.",
    ))
_add(TaskSpec(
    "qnli", "QNLI", ("entailment", "not_entailment"), True, "accuracy",
    Template("Question: {text}\nSentence: {text_pair}", "\nDoes the sentence answer the question? Answer:",
             ("Yes", "No")),
    Template("{text} ?", " {mask}, {text_pair}", ("Yes", "No")),
    HubSource("glue", "qnli", "question", "sentence"),
    "Question-answering NLI.",
))
_add(TaskSpec(
    "qqp", "QQP", ("not_duplicate", "duplicate"), True, "f1",
    Template("Question 1: {text}\nQuestion 2: {text_pair}", "\nSame question? Answer:", ("No", "Yes")),
    Template("{text} ?", " {mask}, {text_pair}", ("No", "Yes")),
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

TASKS: dict[str, TaskSpec] = {s.name: s for s in _SPECS}
TASK_NAMES: tuple[str, ...] = tuple(TASKS)


def get_task(name: str | TaskSpec) -> TaskSpec:
    """Look a task up by its name ("sst2") or env name ("SST2"), case-insensitively."""
    if isinstance(name, TaskSpec):
        return name
    key = str(name).lower()
    if key in TASKS:
        return TASKS[key]
    for spec in _SPECS:
        if spec.env_name.lower() == key:
            return spec
    raise UnknownTaskError(f"unknown task {name!r}; known tasks: {', '.join(TASK_NAMES)}")
