"""Generate the default corpus: short factual claims of the kind a fact-checking service embeds.

`python -m profiler.default_corpus` rewrites data/corpus.txt; the fixed seed makes it reproducible.
"""

from __future__ import annotations

import random
from pathlib import Path

SEED = 20251031
SIZE = 1000

CITIES = ["Paris", "Lagos", "Osaka", "Lima", "Oslo", "Nairobi", "Denver", "Hanoi", "Porto",
          "Montreal", "Cairo", "Perth", "Bogotá", "Kraków", "Dublin", "Manila", "Tbilisi"]
COUNTRIES = ["France", "Nigeria", "Japan", "Peru", "Norway", "Kenya", "Vietnam", "Portugal",
             "Canada", "Egypt", "Australia", "Colombia", "Poland", "Ireland", "Chile", "Ghana"]
THINGS = ["unemployment", "inflation", "the homicide rate", "average rent", "child poverty",
          "electricity prices", "rainfall", "the birth rate", "public debt", "broadband coverage",
          "vaccination coverage", "wildfire damage", "car theft", "literacy", "air pollution"]
PEOPLE = ["the mayor", "the health minister", "a senator", "the central bank governor",
          "the opposition leader", "a viral post", "the prime minister", "a campaign ad",
          "the finance ministry", "a local newspaper", "the governor", "a trade union"]
VERBS = ["rose", "fell", "doubled", "halved", "stayed flat", "reached a record high",
         "dropped to its lowest level"]
SHORT = [
    "{city} is the capital of {country}.",
    "{thing} {verb} in {year}.",
    "{country} banned plastic bags in {year}.",
    "{city} hosted the Olympics in {year}.",
    "Water boils at {n} degrees in {city}.",
    "{country} has {n} million people.",
    "The bridge in {city} opened in {year}.",
]
MEDIUM = [
    "{person} said {thing} in {country} {verb} by {pct} percent between {year} and {year2}.",
    "According to {person}, {city} now has more electric buses than any other city in "
    "{country}.",
    "{country} spends {pct} percent of its national budget on defence, more than on schools.",
    "A study claims that {thing} in {city} is {pct} percent higher than the national average.",
    "{person} claimed that {country} imported {n} thousand tonnes of grain in {year}.",
    "The new law in {country} cuts the waiting time for hip surgery to {n} weeks.",
    "Since {year}, {thing} in {country} has {verb}, official statistics show.",
]
LONG = [
    "{person} told reporters on {weekday} that {thing} in {country} {verb} by {pct} percent "
    "over the last {n} years, and that the government's programme launched in {year} was the "
    "main reason for the change.",
    "A widely shared post says that {city} will run out of drinking water within {n} years "
    "because {thing} has {verb} since {year}; the city's water utility says reservoirs are at "
    "{pct} percent of capacity.",
    "In a televised debate, {person} claimed that {country} has the lowest {thing2} in the "
    "region, that it fell by {pct} percent in {year2}, and that neighbouring countries have "
    "seen the opposite trend since {year}.",
    "The report published by the statistics office of {country} in {year2} found that {thing} "
    "{verb} in {n} of the {n2} regions, with {city} recording the largest change at {pct} "
    "percent.",
    "Fact-checkers reviewed a claim by {person} that {thing} in {country} {verb} after the "
    "reform of {year}; the official series shows a change of {pct} percent between {year} and "
    "{year2}, but the method changed in {year2}, so the figures before and after are not "
    "directly comparable.",
]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
THINGS2 = ["tax burden", "youth unemployment", "infant mortality", "energy use per person"]


def generate(seed: int = SEED, size: int = SIZE) -> list[str]:
    """Return `size` claims; the same seed always gives the same list."""
    rng = random.Random(seed)
    pools = [SHORT] * 2 + [MEDIUM] * 6 + [LONG] * 2
    return [_fill(rng, rng.choice(rng.choice(pools))) for _ in range(size)]


def _fill(rng: random.Random, template: str) -> str:
    year = rng.randint(1990, 2024)
    text = template.format(
        city=rng.choice(CITIES), country=rng.choice(COUNTRIES), thing=rng.choice(THINGS),
        thing2=rng.choice(THINGS2), person=rng.choice(PEOPLE), verb=rng.choice(VERBS),
        year=year, year2=min(year + rng.randint(1, 10), 2025), n=rng.randint(2, 95),
        n2=rng.randint(96, 120), pct=rng.randint(2, 80), weekday=rng.choice(WEEKDAYS))
    return text[0].upper() + text[1:]


if __name__ == "__main__":
    Path("data/corpus.txt").write_text("\n".join(generate()) + "\n", encoding="utf-8")
