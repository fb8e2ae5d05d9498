"""Build the built-in named-entity task (``assets/tasks/ner``): English template sentences with person,
location and organisation names, BIO-tagged, CoNLL files.

The test split's names (first and last names, places, organisation stems) never occur in the training
split, so its score measures whether a model learned what a name looks like *in context*, not a list of
names; a fifth of the test sentences use frames that training never shows. ``python -m core.build.ner_task`` rewrites the files
(seeded: the same files every time).
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from core.finetune.ner import Sentence, to_conll
from core.tasks import TASKS_DIR

FIRST = ("Maria John Aisha Peter Chen Laura Omar Sofia David Elena Kenji Fatima Lucas Nora Ivan Grace Mateo "
         "Hannah Tariq Olga Samuel Leila Victor Amara Hugo Ingrid Rafael Yuki Daniel Mei Arjun Clara Felix Zara "
         "Tomas Alice Jonas Priya Emil Rosa Kofi Lena Marco Ayla Pablo Irene Nikolai Dana Theo Salma Bruno "
         "Vera Oscar Imani Luca Freya Andre Nadia Simon Esther Kai").split()
LAST = ("Lopez Smith Okafor Novak Wang Bauer Haddad Rossi Cohen Petrov Tanaka Diallo Silva Berg Ivanova Kim "
        "Garcia Muller Rahman Kowalski Mensah Dubois Nguyen Moreau Fischer Costa Sato Nakamura Ali Johansson "
        "Reyes Patel Horvat Lindqvist Osei Romano Schmidt Yilmaz Andersen Herrera Kaur Weber Popescu Mbeki "
        "Larsen Ortega Varga Hansen Quinn Adeyemi Fontaine Keller Morales Sorensen Abbott Chowdhury Lund "
        "Baptiste Vogel Marsh").split()
PLACE = ("Lisbon Nairobi Oslo Toronto Kyoto Lima Cairo Dublin Hanoi Quito Prague Dakar Seville Perth Bergen "
         "Accra Porto Tbilisi Havana Krakow Mumbai Zurich Santiago Helsinki Manila Tunis Bogota Riga Munich "
         "Valencia Adelaide Kampala Tallinn Busan Leeds Gdansk Marseille Lagos Sapporo Bristol Tucson Geneva "
         "Ankara Cordoba Lyon Minsk Denver Lahore Halifax Malmo Turin Durban Hobart Nantes Luxor Bilbao "
         "Innsbruck Fresno Taipei Kiev").split()
PLACE2 = ("New Haven|San Telmo|Port Ellis|Cape Verde|Santa Cruz|El Paso|Las Palmas|Saint Lucia|Buenos Aires|"
          "Hong Kong|Rio Blanco|Costa Rica|Sri Lanka|Abu Dhabi|Puerto Rico|Baton Rouge").split("|")
ORG_STEM = ("Northwind Acme Bluepeak Silverline Redwood Orion Meridian Harbor Summit Crescent Evergreen Pioneer "
            "Atlas Keystone Sterling Horizon Beacon Granite Falcon Lakeside Vertex Cobalt Juniper Aurora Zenith "
            "Riverside Ironwood Solstice Maple Cardinal Sapphire Tidewater Westbrook Halcyon Bramble Copperfield "
            "Nimbus Oakridge Quarry Stonegate").split()
ORG_KIND = ("Bank|Group|Airlines|Motors|Labs|Foods|Energy|Press|Insurance|Systems|Pharma|Records|Partners|"
            "Telecom|Holdings").split("|")

FRAMES = [
    "{PER} moved to {LOC} last year .",
    "{PER} works for {ORG} in {LOC} .",
    "The {ORG} office in {LOC} hired {PER} in March .",
    "Yesterday {PER} met {PER} at the {ORG} headquarters .",
    "{ORG} opened a new store in {LOC} .",
    "According to {PER} , {ORG} will cut prices next month .",
    "{PER} was born in {LOC} and studied music .",
    "Shares of {ORG} rose after the report from {LOC} .",
    "In {LOC} , {PER} spoke about the new bridge .",
    "{PER} , a spokesperson for {ORG} , declined to comment .",
    "The mayor of {LOC} thanked {PER} for the donation .",
    "{ORG} and {ORG} agreed to merge on Friday .",
    "We flew from {LOC} to {LOC} with {ORG} .",
    "{PER} told reporters that the match in {LOC} was cancelled .",
    "A new study by {ORG} was led by {PER} .",
    "After ten years in {LOC} , {PER} returned home .",
    "The train to {LOC} was delayed for two hours .",
    "{PER} bought a small house near {LOC} .",
    "{ORG} sponsors the festival in {LOC} every summer .",
    "My friend {PER} recommended the cafe in {LOC} .",
    "{PER} resigned from {ORG} on Tuesday .",
    "Officials in {LOC} said the road will reopen soon .",
    "{PER} and {PER} will visit {LOC} in June .",
    "The report was published by {ORG} this morning .",
    "It rained all week in {LOC} .",
    "{PER} signed a contract with {ORG} .",
    "Tourists in {LOC} praised the old market .",
    "{ORG} reported record profits in {LOC} .",
    "Last night {PER} won the award for best actor .",
    "The museum in {LOC} received a gift from {ORG} .",
    "{PER} said the weather was fine .",
    "Nobody expected the price of bread to rise so quickly .",
]
TEST_FRAMES = [  # sentence frames never seen in training: the context must be understood, not recalled
    "Fans waited outside the stadium in {LOC} to see {PER} .",
    "{ORG} denied that {PER} had left the company .",
    "The flight from {LOC} landed late because of fog .",
    "Critics say {ORG} paid too little tax in {LOC} .",
    "{PER} thanked the nurses at the hospital in {LOC} .",
    "Investors sold shares of {ORG} after the news .",
    "When {PER} arrived in {LOC} , the shops were closed .",
    "A court in {LOC} fined {ORG} for breaking the rules .",
]


def _person(rng: random.Random, first: list[str], last: list[str]) -> list[str]:
    r = rng.random()
    return [rng.choice(first)] if r < 0.25 else [rng.choice(last)] if r < 0.35 else \
        [rng.choice(first), rng.choice(last)]


def _place(rng: random.Random, places: list[str], two_word: list[str]) -> list[str]:
    return rng.choice(two_word).split() if rng.random() < 0.2 else [rng.choice(places)]


def _org(rng: random.Random, stems: list[str], places: list[str]) -> list[str]:
    r = rng.random()
    if r < 0.15:
        return ["University", "of", rng.choice(places)]
    return [rng.choice(stems)] if r < 0.3 else [rng.choice(stems), rng.choice(ORG_KIND)]


def _fill(frame: str, rng: random.Random, pools: dict) -> Sentence:
    tokens, tags = [], []
    for word in frame.split():
        kind = word.strip("{}") if word.startswith("{") else None
        if kind is None:
            tokens.append(word)
            tags.append("O")
            continue
        if kind == "PER":
            words = _person(rng, pools["first"], pools["last"])
        elif kind == "LOC":
            words = _place(rng, pools["places"], pools["two_word"])
        else:
            words = _org(rng, pools["stems"], pools["places"])
        tokens += words
        tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(words) - 1)
    return Sentence(tuple(tokens), tuple(tags))


def _halves(items: list[str], rng: random.Random, share: float = 0.65) -> tuple[list[str], list[str]]:
    items = list(items)
    rng.shuffle(items)
    cut = round(len(items) * share)
    return items[:cut], items[cut:]


def build(n_train: int = 800, n_test: int = 300, seed: int = 0) -> tuple[list[Sentence], list[Sentence]]:
    rng = random.Random(seed)
    split = {name: _halves(pool, rng) for name, pool in
             (("first", FIRST), ("last", LAST), ("places", PLACE), ("two_word", PLACE2), ("stems", ORG_STEM))}
    train_pools = {k: v[0] for k, v in split.items()}
    test_pools = {k: v[1] for k, v in split.items()}
    train = [_fill(FRAMES[i % len(FRAMES)], rng, train_pools) for i in range(n_train)]
    frames = FRAMES + TEST_FRAMES
    test = [_fill(frames[i % len(frames)], rng, test_pools) for i in range(n_test)]
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test


DESCRIPTION = ("Named entities (person, location, organisation) in English template sentences, BIO tags. The test "
               "split's names never appear in training, and a fifth of its sentences use frames training never "
               "shows, so its entity F1 measures whether a model recognises a name from its context rather than "
               "remembering a list. Made by the project (python -m core.build.ner_task).")


def main(out: Path = TASKS_DIR / "ner") -> None:
    train, test = build()
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.conll").write_text(to_conll(train))
    (out / "test.conll").write_text(to_conll(test))
    labels = ["O"] + [f"{p}-{t}" for t in ("LOC", "ORG", "PER") for p in ("B", "I")]
    (out / "ner.json").write_text(json.dumps({"description": DESCRIPTION, "labels": labels}, indent=2) + "\n")
    print(f"wrote {len(train)} training and {len(test)} test sentences to {out}")


if __name__ == "__main__":
    main()
