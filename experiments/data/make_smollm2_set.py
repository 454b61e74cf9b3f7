"""Write the small text set shipped for the SmolLM2 first-step-trigger experiment (deterministic).

Outputs (JSONL, next to this file):
  smollm2_problems.jsonl  {"id", "question", "answer", "cot", "split"}: simple arithmetic and word
                          problems with a worked step-by-step solution; split "train" (SAE texts and
                          the feature contrast) or "eval" (steer-check), disjoint questions.
  instructions.json       chain-of-thought and direct-answer instruction variants.
  general.jsonl           short general-domain texts mixed into the SAE training set.
Nothing is downloaded; everything is generated from templates here.  Re-run:
  python experiments/data/make_smollm2_set.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
NAMES = ["Tom", "Anna", "Ravi", "Mia", "Leo", "Sara", "Omar", "Lena", "Ken", "Zoe", "Ivan", "Maya"]
ITEMS = ["apple", "book", "marble", "card", "pencil", "stamp", "cookie", "shell", "coin", "sticker"]

COT = [
    "Think step by step, then give the final answer.",
    "Let's reason it out step by step before answering.",
    "Explain your reasoning step by step and end with the answer.",
    "Work through the problem carefully, showing each step, then state the answer.",
]
DIRECT = [
    "Answer with only the final number.",
    "Give just the answer, no explanation.",
    "Reply with the number only.",
    "Do not explain. Write only the final number.",
]

GENERAL = [
    "The capital of France is Paris, a city known for its museums and cafes.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "A week has seven days, and a year usually has three hundred sixty-five days.",
    "The library opens at nine in the morning and closes at six in the evening.",
    "Cats often sleep for more than twelve hours a day.",
    "She planted tomatoes in the garden and watered them every evening.",
    "The train to the coast leaves from platform four.",
    "Rain is expected tomorrow afternoon, so bring an umbrella.",
    "He wrote a short letter to his grandmother and posted it on Monday.",
    "Bees collect nectar from flowers and turn it into honey.",
    "The museum has a new exhibit about ancient Egypt.",
    "Our team practiced passing drills before the match.",
    "The recipe calls for flour, sugar, eggs and a pinch of salt.",
    "Mountains are often colder at the top than at the bottom.",
    "The students read a poem aloud and discussed its meaning.",
    "A bicycle has two wheels, a frame, pedals and a chain.",
    "The moon orbits the Earth about once every twenty-seven days.",
    "She practiced the piano for an hour after dinner.",
    "The shop sells fresh bread every morning.",
    "Paper is made from wood pulp that is pressed and dried.",
    "The river flows through the valley and into the sea.",
    "He fixed the leaking tap with a new washer.",
    "Children played football in the park until it got dark.",
    "The computer restarted after installing the update.",
    "A good night's sleep helps people concentrate.",
    "The bakery on the corner makes excellent croissants.",
    "Owls hunt mostly at night and have very good hearing.",
    "The old bridge was repaired last summer.",
    "Please close the window before you leave the room.",
    "Light travels much faster than sound.",
]


def problem(rng: random.Random) -> tuple[str, int, str]:
    """(question, answer, step-by-step solution) from one of six templates."""
    kind = rng.randrange(6)
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    if kind == 0:
        a, b = rng.randint(3, 40), rng.randint(2, 30)
        q = f"{name} has {a} {item}s and buys {b} more. How many {item}s does {name} have now?"
        return q, a + b, (f"{name} starts with {a} {item}s. Buying {b} more gives {a} + {b} = {a + b}. "
                          f"The answer is {a + b}.")
    if kind == 1:
        a = rng.randint(10, 60)
        b = rng.randint(2, a - 1)
        q = f"{name} had {a} {item}s and gave away {b}. How many {item}s are left?"
        return q, a - b, f"{name} had {a} {item}s. Giving away {b} leaves {a} - {b} = {a - b}. The answer is {a - b}."
    if kind == 2:
        a, b = rng.randint(2, 12), rng.randint(2, 9)
        q = f"A box holds {a} {item}s. How many {item}s are in {b} boxes?"
        return q, a * b, (f"Each box holds {a} {item}s. For {b} boxes that is {b} x {a} = {a * b}. "
                          f"The answer is {a * b}.")
    if kind == 3:
        a, b = rng.randint(2, 12), rng.randint(2, 9)
        q = f"{name} shares {a * b} {item}s equally among {b} friends. How many {item}s does each friend get?"
        return q, a, f"There are {a * b} {item}s for {b} friends. Each gets {a * b} / {b} = {a}. The answer is {a}."
    if kind == 4:
        a, b, c = rng.randint(10, 60), rng.randint(10, 60), rng.randint(10, 60)
        q = f"What is {a} + {b} + {c}?"
        return q, a + b + c, (f"First, {a} + {b} = {a + b}. Then {a + b} + {c} = {a + b + c}. "
                              f"The answer is {a + b + c}.")
    a, b, c = rng.randint(3, 15), rng.randint(2, 7), rng.randint(2, 20)
    q = f"{name} reads {a} pages a day for {b} days and then {c} more pages. How many pages does {name} read in total?"
    return q, a * b + c, (f"In {b} days {name} reads {b} x {a} = {a * b} pages. Adding {c} more gives "
                          f"{a * b} + {c} = {a * b + c}. The answer is {a * b + c}.")


def main(n_train: int = 240, n_eval: int = 48, seed: int = 20261126) -> None:
    rng = random.Random(seed)
    seen: set[str] = set()
    rows = []
    while len(rows) < n_train + n_eval:
        q, a, cot = problem(rng)
        if q in seen:
            continue
        seen.add(q)
        rows.append({"id": len(rows), "question": q, "answer": a, "cot": cot,
                     "split": "train" if len(rows) < n_train else "eval"})
    with open(HERE / "smollm2_problems.jsonl", "w") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    (HERE / "instructions.json").write_text(json.dumps({"cot": COT, "direct": DIRECT}, indent=2) + "\n")
    with open(HERE / "general.jsonl", "w") as fh:
        for t in GENERAL:
            fh.write(json.dumps({"text": t}) + "\n")


if __name__ == "__main__":
    main()
