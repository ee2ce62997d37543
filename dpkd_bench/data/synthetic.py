"""The embedded default benchmark: a seeded, offline, procedurally generated instruction suite.

Records follow the Dolly schema used by MiniLLM and DPKD (``instruction``, ``input``, ``output``)
plus ``family`` and ``id``. ``output`` lists every valid reference, canonical phrasing first.
Training records also carry ``response``: one phrasing drawn uniformly, so that families with
several phrasings give a multi-modal training target (where forward and reverse divergences
behave differently).

Every family has five instruction templates: the first three are used by ``train``,
``synthetic-id`` and ``synthetic-long``; the last two only by ``synthetic-para``. The three
eval sets are:

- ``synthetic-id``: the training distribution (unseen items).
- ``synthetic-long``: the training templates with longer inputs (more list items and record
  fields, longer sentences around the same facts), a length shift.
- ``synthetic-para``: the training input distribution under held-out instruction phrasings.

The suite is sized for a tiny GPT-2 and a BPE tokenizer trained on it: a few hundred distinct
lowercase words, digits, and simple punctuation. No single answer solves a family: within every
family of an eval set no canonical answer is drawn for more than ``MAX_ANSWER_SHARE`` of it.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from dpkd_bench.errors import DataError

GENERATOR_VERSION = 3  # bump whenever the generated text could change for some seed
EVAL_SETS = ("synthetic-id", "synthetic-long", "synthetic-para")
DEV_SPLIT = "dev"  # train-like records held out for validation (e.g. DistiLLM's adaptive SGO)
N_DEV = 200
SPLITS = ("train", DEV_SPLIT, *EVAL_SETS)
N_TEMPLATES = 5
N_SEEN_TEMPLATES = 3  # templates[:3] for train, id and long; templates[3:] for para only
MAX_ANSWER_SHARE = 0.15  # most one canonical answer may take of a family's share of a split
MAX_DRAWS = 200  # draws per accepted example before a family counts as exhausted
TABLE_SEED = 1729  # fixes the made-up country -> capital table

# ---------------------------------------------------------------------------------------------
# Word lists (short, lowercase, shared between families to keep the vocabulary small)

NOUNS = (
    "cup",
    "hat",
    "box",
    "pen",
    "key",
    "ball",
    "lamp",
    "book",
    "coat",
    "shoe",
    "bag",
    "bowl",
    "fork",
    "sock",
    "ring",
    "bell",
    "drum",
    "kite",
    "vase",
    "rope",
)
COLOURS = ("red", "blue", "green", "black", "white", "pink", "brown", "grey", "gold")
SIZES = ("big", "small", "tiny", "huge")
MATERIALS = ("wood", "glass", "stone", "metal", "paper", "wool")
PLACES = ("table", "shelf", "floor", "desk", "chair", "bed", "sofa")
NAMES = ("tom", "ana", "ben", "lea", "sam", "mia", "max", "eva", "leo", "ida", "jon", "kim")
PETS = ("cat", "dog", "fish", "bird", "frog", "goat", "duck", "hen")
FOODS = ("rice", "bread", "soup", "cake", "milk", "tea", "jam", "pie")
JOBS = ("cook", "nurse", "pilot", "baker", "guard", "farmer")
OPPOSITE_PAIRS = (
    ("hot", "cold"),
    ("fast", "slow"),
    ("old", "new"),
    ("tall", "short"),
    ("wet", "dry"),
    ("hard", "soft"),
    ("dark", "light"),
    ("loud", "quiet"),
    ("full", "empty"),
    ("clean", "dirty"),
    ("happy", "sad"),
    ("rich", "poor"),
    ("thick", "thin"),
    ("early", "late"),
    ("strong", "weak"),
    ("sweet", "sour"),
)
OPPOSITES = {a: b for a, b in OPPOSITE_PAIRS} | {b: a for a, b in OPPOSITE_PAIRS}
ADJECTIVES = tuple(OPPOSITES)

_REAL_WORDS = {
    *NOUNS,
    *COLOURS,
    *SIZES,
    *MATERIALS,
    *PLACES,
    *NAMES,
    *PETS,
    *FOODS,
    *JOBS,
    *ADJECTIVES,
}


def _made_up_words(
    rng: random.Random, count: int, suffixes: Sequence[str], taken: set[str]
) -> tuple[str, ...]:
    """``count`` distinct pronounceable non-words: two consonant-vowel syllables and a suffix."""
    onsets, vowels = "bdfgklmnprstvz", "aeiou"
    words: list[str] = []
    while len(words) < count:
        stem = "".join(rng.choice(onsets) + rng.choice(vowels) for _ in range(2))
        word = stem + rng.choice(suffixes)
        if word not in taken:
            taken.add(word)
            words.append(word)
    return tuple(words)


def _capital_table(n: int = 24) -> dict[str, str]:
    rng, taken = random.Random(TABLE_SEED), set(_REAL_WORDS)
    countries = _made_up_words(rng, n, ("ria", "land", "mor"), taken)
    capitals = _made_up_words(rng, n, ("n", "k", "t", "s"), taken)
    return dict(zip(countries, capitals, strict=True))


CAPITAL_OF = _capital_table()
COUNTRIES = tuple(CAPITAL_OF)
CAPITALS = tuple(CAPITAL_OF.values())

# ---------------------------------------------------------------------------------------------
# Families


@dataclass(frozen=True)
class Task:
    """One drawn item: the input text, every valid phrasing (canonical first), template slots."""

    input: str
    outputs: tuple[str, ...]
    slots: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Family:
    """A task family: its instruction templates and a generator ``make(rng, long) -> Task``."""

    name: str
    answer: str  # "short" (a number or a word) or "long" (a sentence or a list)
    phrasings: int  # how many valid phrasings every item has
    templates: tuple[str, ...]  # N_TEMPLATES paraphrases; the last two are held out
    make: Callable[[random.Random, bool], Task]
    description: str = ""

    def __post_init__(self) -> None:
        if len(set(self.templates)) != N_TEMPLATES:
            raise ValueError(f"family '{self.name}' needs {N_TEMPLATES} distinct templates")
        if self.answer not in ("short", "long"):
            raise ValueError(f"family '{self.name}': answer must be 'short' or 'long'")

    def templates_for(self, split: str) -> tuple[str, ...]:
        if split == "synthetic-para":
            return self.templates[N_SEEN_TEMPLATES:]
        return self.templates[:N_SEEN_TEMPLATES]


def _word_list(words: Sequence[str]) -> str:
    """One item a line: every word then tokenises the same way, wherever it stands."""
    return "\n".join(words)


def _capital(rng: random.Random, long: bool) -> Task:
    frames = _CAPITAL_LONG_FRAMES if long else _CAPITAL_FRAMES
    country = rng.choice(COUNTRIES)
    name, other = rng.sample(NAMES, 2)
    city = CAPITAL_OF[country]
    sentence = rng.choice(frames).format(name=name, other=other, country=country)
    return Task(
        sentence,
        (
            f"the capital of {country} is {city}.",
            f"{city} is the capital of {country}.",
            f"it is {city}.",
        ),
    )


_CAPITAL_FRAMES = (
    "{name} lives in {country}.",
    "{name} is from {country}.",
    "{name} went to {country}.",
    "{name} flew to {country}.",
    "{name} works in {country}.",
    "{name} was born in {country}.",
)
_CAPITAL_LONG_FRAMES = (
    "{name} and {other} both live in {country} now.",
    "last year {name} went by train to {country}.",
    "{name} told {other} about the food in {country}.",
    "after the rain {name} walked across {country}.",
)


def _opposite(rng: random.Random, long: bool) -> Task:
    frames = _OPPOSITE_LONG_FRAMES if long else _OPPOSITE_FRAMES
    adjective = rng.choice(ADJECTIVES)
    noun, other = rng.sample(NOUNS, 2)
    sentence = rng.choice(frames).format(
        adj=adjective, noun=noun, other=other, name=rng.choice(NAMES), place=rng.choice(PLACES)
    )
    answer = OPPOSITES[adjective]
    return Task(sentence, (answer, f"the opposite of {adjective} is {answer}."))


_OPPOSITE_FRAMES = (
    "the {noun} is {adj}.",
    "this {noun} looks {adj}.",
    "my {noun} is very {adj}.",
    "{name} sees the {adj} {noun}.",
)
_OPPOSITE_LONG_FRAMES = (
    "{name} says that the {noun} is {adj} today.",
    "the {noun} on the {place} is very {adj} now.",
    "we think that this {noun} next to the {other} looks {adj}.",
)


_RECORD_FIELDS: dict[str, Callable[[random.Random], str]] = {
    "name": lambda rng: rng.choice(NAMES),
    "age": lambda rng: str(rng.randint(10, 79)),
    "city": lambda rng: rng.choice(CAPITALS),
    "pet": lambda rng: rng.choice(PETS),
}
_EXTRA_RECORD_FIELDS: dict[str, Callable[[random.Random], str]] = {
    "colour": lambda rng: rng.choice(COLOURS),
    "food": lambda rng: rng.choice(FOODS),
    "job": lambda rng: rng.choice(JOBS),
}


def _extract(rng: random.Random, long: bool) -> Task:
    """A record whose four base fields always come in the same order; one of them is asked.

    Longer inputs append two or three extra fields; the asked field is always a base one.
    """
    record = {key: make(rng) for key, make in _RECORD_FIELDS.items()}
    if long:
        extras = rng.sample(list(_EXTRA_RECORD_FIELDS), rng.randint(2, 3))
        record.update((key, _EXTRA_RECORD_FIELDS[key](rng)) for key in extras)
    asked = rng.choice(list(_RECORD_FIELDS))
    value = record[asked]
    text = "\n".join(f"{key}: {val}" for key, val in record.items())
    return Task(text, (f"the {asked} is {value}.", f"{asked}: {value}"), {"field": asked})


def _count(rng: random.Random, long: bool) -> Task:
    n = rng.randint(7, 14) if long else rng.randint(1, 9)
    return Task(_word_list(rng.sample(NOUNS, n)), (str(n),))


def _add(rng: random.Random, long: bool) -> Task:
    frames = _ADD_LONG_FRAMES if long else _ADD_FRAMES
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    name, other = rng.sample(NAMES, 2)
    text = rng.choice(frames).format(a=a, b=b, name=name, other=other, place=rng.choice(PLACES))
    return Task(text, (f"{a} + {b} = {a + b}",))  # operands echoed next to the sum


_ADD_FRAMES = (
    "{a} + {b}",
    "{a} and {b}",
    "{a} plus {b}",
    "{name} has {a} and {other} has {b}.",
    "{name} buys {a} and then {b} more.",
)
_ADD_LONG_FRAMES = (
    "{name} has {a} on the {place} and {other} puts {b} more next to them.",
    "in the morning {name} found {a} and in the evening {other} found {b}.",
    "first {name} brings {a} to the {place} and after that {other} brings {b}.",
)


def _reverse(rng: random.Random, long: bool) -> Task:
    words = rng.sample(NOUNS, rng.randint(5, 7) if long else rng.randint(2, 4))
    return Task(_word_list(words), (_word_list(words[::-1]),))


def _pattern(rng: random.Random, long: bool) -> Task:
    period = rng.randint(2, 3)
    cycle = rng.sample(NOUNS, period)
    shown = 2 * period + (rng.randint(3, 5) if long else rng.randint(0, 2))
    terms = [cycle[i % period] for i in range(shown + 3)]
    return Task(_word_list(terms[:shown]), (_word_list(terms[shown:]),))


def _describe(rng: random.Random, long: bool) -> Task:
    facts = {
        "object": rng.choice(NOUNS),
        "colour": rng.choice(COLOURS),
        "size": rng.choice(SIZES),
        "place": rng.choice(PLACES),
    }
    if long or rng.random() < 0.5:
        facts["material"] = rng.choice(MATERIALS)
    lines = [f"{key}: {val}" for key, val in facts.items()]
    obj, colour, size, place = facts["object"], facts["colour"], facts["size"], facts["place"]
    made = f" made of {facts['material']}" if "material" in facts else ""
    return Task(
        "\n".join(lines),
        (
            f"the {size} {colour} {obj}{made} is on the {place}.",
            f"on the {place} there is a {size} {colour} {obj}{made}.",
            f"there is a {colour} {obj}{made} on the {place} and it is {size}.",
        ),
    )


def _register(*families: Family) -> dict[str, Family]:
    registry: dict[str, Family] = {}
    for family in families:
        if family.name in registry:
            raise ValueError(f"duplicate synthetic task family '{family.name}'")
        registry[family.name] = family
    return registry


FAMILIES: dict[str, Family] = _register(
    Family(
        "capital",
        "short",
        3,
        (
            "what is the capital of the country in the sentence?",
            "name the capital city of the country mentioned in the input.",
            "which city is the capital of the country that the sentence talks about?",
            "give the capital of the country named in the text.",
            "tell me the capital of the country in this sentence.",
        ),
        _capital,
        "a memorised made-up country -> capital table, country named inside a sentence",
    ),
    Family(
        "opposite",
        "short",
        2,
        (
            "what is the opposite of the adjective in the sentence?",
            "give the antonym of the describing word in the input.",
            "find the word that means the opposite of the adjective in the sentence.",
            "which word is the opposite of the adjective used here?",
            "write the opposite of the adjective in this sentence.",
        ),
        _opposite,
        "the antonym, from a fixed table, of the adjective in a sentence",
    ),
    Family(
        "extract",
        "short",
        2,
        (
            "what is the {field} in the record?",
            "find the value of the {field} field in the input.",
            "read the record and give the {field}.",
            "look up the {field} in this record.",
            "which {field} does the record list?",
        ),
        _extract,
        "copy one named field out of a key: value record (name, age, city, pet, in that order)",
    ),
    Family(
        "count",
        "short",
        1,
        (
            "how many items are in the list?",
            "count the words in the list.",
            "give the number of items in the input list.",
            "tell me how many things the list has.",
            "what is the number of entries in this list?",
        ),
        _count,
        "the length of a list of distinct words, uniform over 1..9",
    ),
    Family(
        "add",
        "short",
        1,
        (
            "add the two numbers.",
            "what is the sum of the numbers in the input?",
            "compute the total of the two numbers.",
            "find the result when the two numbers are added together.",
            "tell me what the two numbers add up to.",
        ),
        _add,
        "the sum of two digits, given bare or inside a short sentence",
    ),
    Family(
        "reverse",
        "long",
        1,
        (
            "reverse the order of the words in the list.",
            "write the list backwards.",
            "give the items of the list in reverse order.",
            "list these words from last to first.",
            "put the words of the input in the opposite order.",
        ),
        _reverse,
        "a list of 2..4 words, last to first",
    ),
    Family(
        "pattern",
        "long",
        1,
        (
            "continue the pattern with the next three words.",
            "what three words come next in the pattern?",
            "give the next three items of the repeating list.",
            "extend this repeating list by three more words.",
            "write the three words that follow in this pattern.",
        ),
        _pattern,
        "the next three words of a list that repeats a cycle of 2 or 3 words",
    ),
    Family(
        "describe",
        "long",
        3,
        (
            "describe the object in one sentence.",
            "write a sentence about the object using the details in the input.",
            "turn the details into a short description.",
            "use the facts below to describe the thing.",
            "make one sentence that describes this object.",
        ),
        _describe,
        "a key: value description of an object (material in half of them) as one sentence",
    ),
)

# ---------------------------------------------------------------------------------------------
# Generation


def _check_name(kind: str, name: str, known: Sequence[str]) -> None:
    if name not in known:
        raise ValueError(f"unknown synthetic {kind} '{name}'; known: {', '.join(known)}")


def _example_id(split: str, family: str, instruction: str, input_text: str) -> str:
    digest = hashlib.sha256(f"{instruction}\x1f{input_text}".encode()).hexdigest()[:12]
    return f"{split}-{family}-{digest}"


def generate_example(family: str, rng: random.Random, *, split: str) -> dict:
    """Draw one record of ``family`` for ``split`` (``"train"``, ``"dev"`` or an eval set).

    Train and dev records carry ``response``: one of the valid phrasings, drawn uniformly by
    ``rng``; dev records use the training templates.
    """
    _check_name("task family", family, tuple(FAMILIES))
    _check_name("split", split, SPLITS)
    spec = FAMILIES[family]
    template = rng.choice(spec.templates_for(split))
    task = spec.make(rng, split == "synthetic-long")
    if len(task.outputs) != spec.phrasings:
        raise RuntimeError(f"family '{family}' made {len(task.outputs)} phrasings")
    instruction = template.format(**task.slots)
    record = {
        "instruction": instruction,
        "input": task.input,
        "output": list(task.outputs),
        "family": family,
        "id": _example_id(split, family, instruction, task.input),
    }
    if split in ("train", DEV_SPLIT):
        record["response"] = rng.choice(task.outputs)
    return record


def _family_quotas(size: int) -> dict[str, int]:
    """Equal shares; the first ``size % n`` families take one more."""
    n = len(FAMILIES)
    return {name: size // n + (i < size % n) for i, name in enumerate(FAMILIES)}


def _draw_accepted(
    family: str,
    rng: random.Random,
    split: str,
    seen: set[tuple[str, str]],
    answers: Counter,
    cap: int,
) -> dict:
    """Draw until an item is new to the suite and its canonical answer is under its cap."""
    for _ in range(MAX_DRAWS):
        record = generate_example(family, rng, split=split)
        key = (record["instruction"], record["input"])
        if key in seen or answers[record["output"][0]] >= cap:
            continue
        seen.add(key)
        answers[record["output"][0]] += 1
        return record
    raise DataError(
        f"the synthetic family '{family}' ran out of distinct items for '{split}' after "
        f"{MAX_DRAWS} draws; lower data.n_train or data.n_eval"
    )


def _generate_split(
    split: str, size: int, rng: random.Random, seen: set[tuple[str, str]]
) -> list[dict]:
    """``size`` records, families round-robin, none of them already in ``seen``."""
    quotas = _family_quotas(size)
    caps = {name: max(1, math.ceil(MAX_ANSWER_SHARE * q)) for name, q in quotas.items()}
    answers = {name: Counter() for name in FAMILIES}
    names = list(FAMILIES)
    return [
        _draw_accepted(name, rng, split, seen, answers[name], caps[name])
        for name in (names[i % len(names)] for i in range(size))
    ]


def _check_size(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DataError(f"synthetic suite: {name} must be an integer >= {minimum}, got {value!r}")


def generate_suite(seed: int = 0, n_train: int = 6000, n_eval: int = 500) -> dict[str, list[dict]]:
    """The whole suite: ``train``, ``dev`` (``N_DEV`` records) and every name in ``EVAL_SETS``.

    Deterministic in ``seed``. Each split draws from its own stream,
    ``random.Random(f"{seed}-{split}")``. The eval sets and then ``dev`` are drawn first (so they
    do not depend on ``n_train``) and no (instruction, input) pair appears twice in the suite.
    """
    _check_size("n_train", n_train, 1)
    _check_size("n_eval", n_eval, 1)
    seen: set[tuple[str, str]] = set()
    suite = {
        split: _generate_split(
            split, N_DEV if split == DEV_SPLIT else n_eval, random.Random(f"{seed}-{split}"), seen
        )
        for split in (*EVAL_SETS, DEV_SPLIT)
    }
    train = _generate_split("train", n_train, random.Random(f"{seed}-train"), seen)
    return {"train": train, **suite}


def suite_fingerprint(seed: int, n_train: int, n_eval: int) -> str:
    """sha256 over the generator version and the parameters: equal fingerprints, equal suites."""
    params = {
        "version": GENERATOR_VERSION,
        "seed": seed,
        "n_train": n_train,
        "n_eval": n_eval,
        "n_dev": N_DEV,
    }
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode("utf-8")).hexdigest()
