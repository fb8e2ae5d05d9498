"""Write the built-in few-shot tasks into ``assets/tasks/`` (written by the project).

    python -m core.build.builtin_tasks

Every sentence is composed here from word lists with a seeded generator, so the
data is the project's own and can be regenerated. Each task gets ``task.json``
(template, choices, description), ``train.csv`` (the demonstration pool) and
``test.csv`` (the queries); train and test never share a row.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd

from core.tasks import TASKS_DIR

SUBJECTS = ["The pasta", "This movie", "The hotel room", "Our waiter", "The battery life", "The ending",
            "The concert", "This phone", "The service", "The soundtrack", "The museum tour", "The coffee",
            "This novel", "The camera", "The staff", "The pizza", "The plot", "This laptop", "The view",
            "The delivery", "The acting", "The bed", "The keyboard", "The dessert", "The app"]
GOOD = ["wonderful", "delightful", "excellent", "superb", "great", "fantastic", "lovely", "brilliant",
        "charming", "impressive"]
BAD = ["awful", "terrible", "disappointing", "bland", "dreadful", "horrible", "boring", "poor",
       "annoying", "useless"]
GOOD_TAIL = ["and I would go back.", "and worth every penny.", "and I loved it.", "and I smiled all day.",
             "and I recommend it.", "from start to finish."]
BAD_TAIL = ["and I want a refund.", "and a waste of money.", "and I regret it.", "and I left early.",
            "and I will not return.", "from start to finish."]

TOPICS = {
    "sports": (["The striker", "Our goalkeeper", "The coach", "The tennis player", "The marathon runner",
                "The home team"],
               ["scored twice in the final", "won the championship game", "trained hard before the match",
                "broke the league record", "missed the penalty kick", "signed a new contract with the club"]),
    "food": (["The chef", "My grandmother", "The bakery", "The street vendor", "Our neighbour", "The restaurant"],
             ["baked fresh bread this morning", "added garlic to the soup", "served a spicy curry",
              "made a chocolate cake", "grilled fish with lemon", "cooked rice with beans"]),
    "weather": (["The forecast", "The storm", "A cold front", "The morning fog", "Heavy rain", "The heatwave"],
                ["brought snow to the mountains", "flooded the valley roads", "kept temperatures below zero",
                 "cleared by noon", "is moving north tonight", "caused strong winds on the coast"]),
    "technology": (["The new chip", "The software update", "The startup", "Our server", "The robot",
                    "The search engine"],
                   ["runs twice as fast", "fixed a security bug", "released a mobile app",
                    "crashed after the upgrade", "uses less battery power", "stores data in the cloud"]),
}

ANTONYMS = [("hot", "cold"), ("big", "small"), ("fast", "slow"), ("happy", "sad"), ("up", "down"),
            ("open", "closed"), ("early", "late"), ("light", "dark"), ("old", "new"), ("hard", "soft"),
            ("rich", "poor"), ("strong", "weak"), ("wet", "dry"), ("full", "empty"), ("loud", "quiet"),
            ("high", "low"), ("long", "short"), ("thick", "thin"), ("clean", "dirty"), ("cheap", "expensive"),
            ("near", "far"), ("young", "old"), ("first", "last"), ("true", "false"), ("win", "lose"),
            ("buy", "sell"), ("push", "pull"), ("give", "take"), ("inside", "outside"), ("day", "night"),
            ("love", "hate"), ("begin", "end"), ("left", "right"), ("north", "south"), ("east", "west"),
            ("good", "bad"), ("black", "white"), ("above", "below"), ("before", "after"), ("friend", "enemy"),
            ("safe", "dangerous"), ("sweet", "sour"), ("heavy", "light"), ("wide", "narrow"), ("deep", "shallow"),
            ("easy", "difficult"), ("question", "answer"), ("always", "never"), ("arrive", "leave"),
            ("accept", "refuse"), ("remember", "forget"), ("increase", "decrease"), ("maximum", "minimum"),
            ("success", "failure"), ("positive", "negative"), ("future", "past"), ("king", "queen"),
            ("brave", "afraid"), ("tall", "short"), ("polite", "rude")]

RECALL_KEYS = 12  # the embedded models' context (64 tokens) holds 12 bindings and a query


def _write(name: str, train: list[dict], test: list[dict], meta: dict, out: Path) -> None:
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(train).to_csv(folder / "train.csv", index=False)
    pd.DataFrame(test).to_csv(folder / "test.csv", index=False)
    (folder / "task.json").write_text(json.dumps(meta, indent=2) + "\n")


def _split(rows: list[dict], n_train: int, rng: random.Random) -> tuple[list[dict], list[dict]]:
    rows = list({json.dumps(r, sort_keys=True): r for r in rows}.values())  # no duplicate rows
    rng.shuffle(rows)
    return rows[:n_train], rows[n_train:]


def sentiment(rng: random.Random) -> tuple[list[dict], list[dict]]:
    rows = []
    for subject in SUBJECTS:
        for label, adjs, tails in (("positive", GOOD, GOOD_TAIL), ("negative", BAD, BAD_TAIL)):
            for adj in rng.sample(adjs, 2):
                rows.append({"text": f"{subject} was {adj} {rng.choice(tails)}", "label": label})
    return _split(rows, 40, rng)


def topic(rng: random.Random) -> tuple[list[dict], list[dict]]:
    rows = [{"text": f"{s} {p}.", "label": label}
            for label, (subjects, preds) in TOPICS.items() for s in subjects for p in preds]
    return _split(rows, 48, rng)


def antonyms(rng: random.Random) -> tuple[list[dict], list[dict]]:
    return _split([{"word": a, "answer": b} for a, b in ANTONYMS], 30, rng)


def addition(rng: random.Random) -> tuple[list[dict], list[dict]]:
    pairs = {(rng.randint(10, 99), rng.randint(10, 99)) for _ in range(400)}
    rows = [{"a": str(a), "b": str(b), "answer": str(a + b)} for a, b in sorted(pairs)]
    train, test = _split(rows, 100, rng)
    return train, test[:200]


def recall(rng: random.Random) -> tuple[list[dict], list[dict]]:
    """One dictionary of bindings: the train split lists it, test queries its keys."""
    keys = rng.sample(range(512), RECALL_KEYS)
    values = rng.sample(range(512), RECALL_KEYS)  # distinct values: one per choice
    train = [{"key": f"w{k}", "value": f"w{v}"} for k, v in zip(keys, values)]
    test = [dict(r) for r in train for _ in range(4)]
    rng.shuffle(test)
    return train, test


GROUP_WORDS = 64   # words in the word-groups task, half in each group
GROUP_LABELS = ("w0", "w1")  # the group names; never used as input words


def word_groups(rng: random.Random) -> tuple[list[dict], list[dict]]:
    """Five words in, which of two fixed (random) word groups holds most of them out.

    Nothing in a prompt says which group a word is in: a model can learn it only by
    changing its weights (fine-tuning), which makes it the task where the embedded
    models start at chance and in-context demonstrations help little.
    """
    words = rng.sample(range(2, 512), GROUP_WORDS)
    group = {w: i % 2 for i, w in enumerate(words)}
    rows = []
    for _ in range(1200):
        picked = [rng.choice(words) for _ in range(5)]
        votes = sum(group[w] for w in picked)
        rows.append({"words": " ".join(f"w{w}" for w in picked), "group": GROUP_LABELS[int(votes >= 3)]})
    return _split(rows, 800, rng)


# ---- tasks worth prompting on a real small model (SmolLM2-135M): neither at chance nor at ceiling at k=0 ----

def sentiment_hard(rng: random.Random) -> tuple[list[dict], list[dict]]:
    """Reviews whose surface words point the wrong way: negation, contrast, sarcasm, faint praise."""
    forms = [
        ("{s} was not {bad} at all.", "positive"), ("{s} was not {good} at all.", "negative"),
        ("I expected {sl} to be {bad}, but it was {good}.", "positive"),
        ("I expected {sl} to be {good}, but it was {bad}.", "negative"),
        ("{s} was {good}, if you enjoy wasting an evening.", "negative"),
        ("{s} was {good}... said nobody, ever.", "negative"),
        ("Everyone said {sl} would be {bad}; they were wrong.", "positive"),
        ("Everyone said {sl} would be {good}; they were wrong.", "negative"),
        ("{s} could not have been more {good}.", "positive"),
        ("{s} could hardly have been less {good}.", "negative"),
        ("I have never seen anything less {bad} than {sl}.", "positive"),
        ("{s} was far from {good}.", "negative"),
    ]
    rows = []
    for subject in SUBJECTS:
        for form, label in rng.sample(forms, 6):
            rows.append({"text": form.format(s=subject, sl=subject[0].lower() + subject[1:],
                                             good=rng.choice(GOOD), bad=rng.choice(BAD)), "label": label})
    return _split(rows, 50, rng)


TOPICS_8 = {**TOPICS,
    "politics": (["The senator", "The prime minister", "Parliament", "The mayor", "The new party", "The voters"],
                 ["passed a law on taxes", "won the election by a few votes", "debated the national budget",
                  "called for new elections", "signed a trade treaty", "resigned after the scandal"]),
    "music": (["The band", "The pianist", "The orchestra", "Our choir", "The singer", "The drummer"],
              ["released a new album", "played a concert in the park", "tuned the guitar before the show",
               "recorded a song in the studio", "sang the opera in Italian", "toured with the symphony"]),
    "health": (["The doctor", "The nurse", "The hospital", "The patient", "The new vaccine", "The clinic"],
               ["treated the fever with rest", "prescribed antibiotics", "lowered the risk of heart disease",
                "recovered after surgery", "tested blood pressure", "reduced flu infections"]),
    "travel": (["The tourists", "Our flight", "The cruise ship", "The backpacker", "The tour guide", "The train"],
               ["arrived in Rome at dawn", "visited the old castle", "booked a hotel by the beach",
                "crossed the border into Spain", "was delayed at the airport", "explored the island by boat"]),
}


def topic_8(rng: random.Random) -> tuple[list[dict], list[dict]]:
    rows = [{"text": f"{s} {p}.", "label": label}
            for label, (subjects, preds) in TOPICS_8.items() for s in subjects for p in preds]
    train, test = _split(rows, 96, rng)
    return train, test[:96]


CAPITALS = [("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
            ("Japan", "Tokyo"), ("China", "Beijing"), ("Russia", "Moscow"), ("Egypt", "Cairo"),
            ("Canada", "Ottawa"), ("Australia", "Canberra"), ("Brazil", "Brasilia"), ("India", "New Delhi"),
            ("Greece", "Athens"), ("Portugal", "Lisbon"), ("Ireland", "Dublin"), ("Norway", "Oslo"),
            ("Sweden", "Stockholm"), ("Finland", "Helsinki"), ("Denmark", "Copenhagen"), ("Poland", "Warsaw"),
            ("Austria", "Vienna"), ("Hungary", "Budapest"), ("Turkey", "Ankara"), ("Kenya", "Nairobi"),
            ("Peru", "Lima"), ("Chile", "Santiago"), ("Argentina", "Buenos Aires"), ("Mexico", "Mexico City"),
            ("Thailand", "Bangkok"), ("Vietnam", "Hanoi"), ("Indonesia", "Jakarta"), ("Iran", "Tehran"),
            ("Iraq", "Baghdad"), ("Cuba", "Havana"), ("Belgium", "Brussels"), ("Netherlands", "Amsterdam"),
            ("Switzerland", "Bern"), ("Czechia", "Prague"), ("Romania", "Bucharest"), ("Ukraine", "Kyiv"),
            ("Nigeria", "Abuja"), ("Morocco", "Rabat"), ("Pakistan", "Islamabad"), ("Colombia", "Bogota"),
            ("South Korea", "Seoul"), ("Philippines", "Manila"), ("New Zealand", "Wellington"),
            ("Scotland", "Edinburgh"), ("Wales", "Cardiff"), ("Iceland", "Reykjavik")]


def capitals(rng: random.Random) -> tuple[list[dict], list[dict]]:
    return _split([{"country": c, "capital": k} for c, k in CAPITALS], 20, rng)


def dates(rng: random.Random) -> tuple[list[dict], list[dict]]:
    """Rewrite an ISO date as day/month/year: the format is in the demonstrations, not in the words."""
    rows = []
    for _ in range(300):
        y, m, d = rng.randint(1950, 2030), rng.randint(1, 12), rng.randint(1, 28)
        rows.append({"date": f"{y}-{m:02d}-{d:02d}", "answer": f"{d:02d}/{m:02d}/{y}"})
    train, test = _split(rows, 60, rng)
    return train, test[:80]


def write_all(out: Path = TASKS_DIR, seed: int = 0) -> None:
    rng = random.Random(seed)
    tasks = {
        "sentiment": (sentiment, {
            "description": "Is a short review positive or negative?",
            "template": {"input": "Review: {text}\nSentiment:"},
            "label_column": "label", "choices": ["positive", "negative"],
            "unrelated_labels": ["foo", "bar"]}),
        "topic": (topic, {
            "description": "The topic of a short sentence: sports, food, weather or technology.",
            "template": {"input": "Sentence: {text}\nTopic:"},
            "label_column": "label", "choices": list(TOPICS), "unrelated_labels": ["foo", "bar", "baz", "qux"]}),
        "antonyms": (antonyms, {
            "description": "Give the opposite of a word (generative, exact match).",
            "template": {"input": "{word} ->"}, "label_column": "answer", "choices": None}),
        "addition": (addition, {
            "description": "Add two two-digit numbers (generative, exact match).",
            "template": {"input": "Q: {a} + {b} =", "fewshot_delimiter": "\n"},
            "label_column": "answer", "choices": None}),
    }
    for name, (make, meta) in tasks.items():
        _write(name, *make(rng), meta, out)
    train, test = recall(rng)
    _write("recall", train, test, {
        "description": "Key -> value recall in the embedded models' language: the answer is the value "
                       "bound to the key in the demonstrations (absent if the key is not among them).",
        "template": {"input": "{key} =", "fewshot_delimiter": " ; "},
        "label_column": "value", "choices": [r["value"] for r in train],
        "unrelated_labels": [f"w{i}" for i in rng.sample(range(512), RECALL_KEYS)]}, out)
    train, test = word_groups(random.Random(seed + 1))
    _write("wordgroups", train, test[:200], {
        "description": "Which of two fixed word groups (w0, w1) holds most of five words? The groups are "
                       "random, so only fine-tuning can learn them; the embedded models start at chance.",
        "template": {"input": "{words} =", "fewshot_delimiter": " ; "},
        "label_column": "group", "choices": list(GROUP_LABELS), "unrelated_labels": ["w2", "w3"]}, out)
    write_english(out, seed)


def write_english(out: Path = TASKS_DIR, seed: int = 0) -> None:
    """The tasks made for a real small model, each with its own generator (the older tasks stay as they were)."""
    tasks = {
        "sentiment-hard": (sentiment_hard, {
            "description": "Sentiment where the surface words mislead: negation ('not bad at all'), contrast "
                           "('expected awful, but lovely'), sarcasm and faint praise. Meant to show: a small model "
                           "reads the adjectives and is near chance at k=0; demonstrations help only where it "
                           "can pick up the construction.",
            "template": {"input": "Review: {text}\nSentiment:"},
            "label_column": "label", "choices": ["positive", "negative"], "unrelated_labels": ["foo", "bar"]}),
        "sentiment-sul": (sentiment, {
            "description": "Semantically unrelated labels (Wei et al. 2023): plain reviews, but the labels are "
                           "'foo' (positive) and 'bar' (negative). Meant to show: at k=0 the model cannot know "
                           "the mapping (chance); only the demonstrations can teach it.",
            "template": {"input": "Review: {text}\nAnswer:"},
            "label_column": "label", "choices": ["foo", "bar"], "label_map": {"positive": "foo", "negative": "bar"}}),
        "topic-8": (topic_8, {
            "description": "The topic of a sentence among eight: sports, food, weather, technology, politics, "
                           "music, health, travel. Meant to show: more classes than a small model guesses from "
                           "the label words alone; demonstrations show the label set.",
            "template": {"input": "Sentence: {text}\nTopic:"},
            "label_column": "label", "choices": list(TOPICS_8)}),
        "capitals": (capitals, {
            "description": "Country -> capital, generated (exact match). Meant to show: knowledge the model has "
                           "or lacks; demonstrations fix the format (one city, then stop) but cannot add facts.",
            "template": {"input": "{country} ->"}, "label_column": "capital", "choices": None}),
        "dates": (dates, {
            "description": "Rewrite an ISO date as DD/MM/YYYY (generative, exact match). A format-following task: "
                           "the instruction is only in the demonstrations, so k=0 fails and a few examples teach it.",
            "template": {"input": "{date} ->"}, "label_column": "answer", "choices": None}),
    }
    for i, (name, (make, meta)) in enumerate(tasks.items()):
        train, test = make(random.Random(seed + 100 + i))
        mapping = meta.pop("label_map", None)
        if mapping:
            for row in train + test:
                row["label"] = mapping[row["label"]]
        _write(name, train, test, meta, out)
    write_function_tasks(out, seed)


# single-answer tasks in the spirit of the function-vector papers' (Todd et al. 2024; Hendel et al. 2023)
PAST = [("walk", "walked"), ("jump", "jumped"), ("play", "played"), ("cook", "cooked"), ("open", "opened"),
        ("call", "called"), ("help", "helped"), ("watch", "watched"), ("clean", "cleaned"), ("start", "started"),
        ("paint", "painted"), ("climb", "climbed"), ("talk", "talked"), ("dance", "danced"), ("smile", "smiled"),
        ("listen", "listened"), ("visit", "visited"), ("answer", "answered"), ("wait", "waited"),
        ("rain", "rained"), ("go", "went"), ("see", "saw"), ("eat", "ate"), ("take", "took"), ("write", "wrote"),
        ("run", "ran"), ("give", "gave"), ("come", "came"), ("drink", "drank"), ("sing", "sang"),
        ("swim", "swam"), ("speak", "spoke"), ("buy", "bought"), ("think", "thought"), ("bring", "brought"),
        ("teach", "taught"), ("catch", "caught"), ("sleep", "slept"), ("keep", "kept"), ("feel", "felt"),
        ("leave", "left"), ("meet", "met"), ("find", "found"), ("tell", "told"), ("sell", "sold"),
        ("stand", "stood"), ("fly", "flew"), ("draw", "drew"), ("grow", "grew"), ("know", "knew")]
PLURAL = [("cat", "cats"), ("dog", "dogs"), ("book", "books"), ("car", "cars"), ("tree", "trees"),
          ("house", "houses"), ("apple", "apples"), ("chair", "chairs"), ("door", "doors"), ("bird", "birds"),
          ("river", "rivers"), ("table", "tables"), ("flower", "flowers"), ("window", "windows"),
          ("garden", "gardens"), ("pencil", "pencils"), ("cup", "cups"), ("road", "roads"), ("shoe", "shoes"),
          ("song", "songs"), ("box", "boxes"), ("bus", "buses"), ("dish", "dishes"), ("church", "churches"),
          ("glass", "glasses"), ("watch", "watches"), ("city", "cities"), ("baby", "babies"),
          ("story", "stories"), ("party", "parties"), ("lady", "ladies"), ("country", "countries"),
          ("knife", "knives"), ("leaf", "leaves"), ("wolf", "wolves"), ("child", "children"), ("man", "men"),
          ("woman", "women"), ("mouse", "mice"), ("foot", "feet"), ("tooth", "teeth"), ("goose", "geese"),
          ("key", "keys"), ("boy", "boys"), ("day", "days"), ("toy", "toys"), ("horse", "horses"),
          ("bottle", "bottles"), ("candle", "candles"), ("hat", "hats")]
LOWER = ["apple", "river", "garden", "window", "silver", "yellow", "morning", "winter", "summer", "planet",
         "dragon", "castle", "forest", "island", "mountain", "ocean", "pencil", "rabbit", "tiger", "violin",
         "orange", "market", "doctor", "teacher", "engine", "rocket", "candle", "bridge", "button", "cookie",
         "desert", "feather", "guitar", "hammer", "jacket", "kitten", "lemon", "mirror", "needle", "pepper",
         "puzzle", "rainbow", "saddle", "tunnel", "valley", "wallet", "zebra", "anchor", "blanket", "cactus"]


def function_task(pairs: list[tuple[str, str]], n_train: int, rng: random.Random) -> tuple[list[dict], list[dict]]:
    return _split([{"input": a, "output": b} for a, b in pairs], n_train, rng)


def write_function_tasks(out: Path = TASKS_DIR, seed: int = 0) -> None:
    """One word in, one word out, with ``input,output`` columns (any CSV of that shape works the same way)."""
    tasks = {
        "past-tense": (PAST, "Present -> past tense of an English verb, regular and irregular (generative, exact "
                             "match)."),
        "plural": (PLURAL, "Singular -> plural of an English noun, regular and irregular (generative, exact match)."),
        "capitalise": ([(w, w.capitalize()) for w in LOWER], "A lower-case word -> the same word with a capital "
                                                            "first letter (generative, exact match)."),
    }
    for i, (name, (pairs, text)) in enumerate(tasks.items()):
        train, test = function_task(pairs, 25, random.Random(seed + 200 + i))
        _write(name, train, test, {"description": text + " Meant for the mechanism lab: a task the demonstrations "
                                   "carry in a task or function vector.", "template": {"input": "{input} ->"},
                                   "label_column": "output", "choices": None}, out)


if __name__ == "__main__":
    write_all()
    print(f"wrote {TASKS_DIR}")
