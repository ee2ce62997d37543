"""Pre-training prose for the synthetic suite: its facts as plain text, the counterpart of
OpenWebText for the pre-training term (``data.pretrain_source: synthetic``)."""

from __future__ import annotations

import random

from dpkd_bench.data.synthetic import (
    ADJECTIVES,
    CAPITAL_OF,
    COLOURS,
    COUNTRIES,
    FOODS,
    JOBS,
    MATERIALS,
    NAMES,
    NOUNS,
    OPPOSITES,
    PETS,
    PLACES,
    SIZES,
    _check_size,
)


def _capital_fact(rng: random.Random) -> str:
    country = rng.choice(COUNTRIES)
    city, name = CAPITAL_OF[country], rng.choice(NAMES)
    return rng.choice(
        (
            f"the capital of {country} is {city}.",
            f"{city} is the capital of {country}.",
            f"{name} lives in {city}, the capital of {country}.",
        )
    )


def _opposite_fact(rng: random.Random) -> str:
    word, noun = rng.choice(ADJECTIVES), rng.choice(NOUNS)
    other = OPPOSITES[word]
    return rng.choice(
        (
            f"the opposite of {word} is {other}.",
            f"{word} and {other} are opposites.",
            f"the {noun} is not {word}, it is {other}.",
        )
    )


def _object_fact(rng: random.Random) -> str:
    size, colour, noun = rng.choice(SIZES), rng.choice(COLOURS), rng.choice(NOUNS)
    place, material = rng.choice(PLACES), rng.choice(MATERIALS)
    return rng.choice(
        (
            f"the {size} {colour} {noun} is on the {place}.",
            f"the {colour} {noun} is made of {material}.",
            f"there is a {size} {noun} on the {place}.",
        )
    )


def _person_fact(rng: random.Random) -> str:
    name, colour, pet = rng.choice(NAMES), rng.choice(COLOURS), rng.choice(PETS)
    job, food = rng.choice(JOBS), rng.choice(FOODS)
    return rng.choice(
        (f"{name} has a {colour} {pet}.", f"{name} works as a {job}.", f"{name} likes {food}.")
    )


def _number_fact(rng: random.Random) -> str:
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    items = rng.sample(NOUNS, rng.randint(2, 9))
    return rng.choice(
        (
            f"{a} plus {b} is {a + b}.",
            f"after {a} comes {a + 1}.",
            f"the list {', '.join(items)} has {len(items)} items.",
        )
    )


_FACTS = (_capital_fact, _opposite_fact, _object_fact, _person_fact, _number_fact)


def pretrain_texts(seed: int, n_docs: int) -> list[str]:
    """``n_docs`` short documents of 3 to 6 plain sentences about the suite's facts.

    No instruction template: prose for the language-modelling term, lowercase like the suite.
    Deterministic in ``seed``, drawn from its own stream ``random.Random(f"{seed}-pretrain")``.
    """
    _check_size("n_docs", n_docs, 1)
    rng = random.Random(f"{seed}-pretrain")
    return [
        " ".join(rng.choice(_FACTS)(rng) for _ in range(rng.randint(3, 6))) for _ in range(n_docs)
    ]
