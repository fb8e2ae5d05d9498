"""The guided lessons: each a few steps a teacher can give in ten minutes, every step one lab call with fixed
settings, a sentence to say and what to notice. Plain data: the Lessons lab runs a step, the tab draws it.

A step's settings are given per *family* of model: ``toy`` (the embedded models, whose words are ``w0``…``w63``)
and ``english`` (a real English model such as SmolLM2). A step without settings for a family is not offered there.
"""
from __future__ import annotations

from core.errors import UserError
from core.lessons.types import Lesson, Step, family  # noqa: F401 - the types the catalogue is made of


RECALL_PROMPT = "w3 = w17 ; w8 = w42 ; w11 = w5 ; w20 = w9 ; w8 ="  # w8 was bound to w42 in the 2nd pair
REPEATED_TOY = "w12 w40 w7 w33 w2 w51 w18 w26 w60 w9 w12 w40 w7 w33 w2 w51 w18 w26 w60 w9"
REPEATED_EN = ("The orange lamp sang quietly above seven velvet rivers near Oslo. "
               "The orange lamp sang quietly above seven velvet rivers near Oslo.")


RECALL = dict(task="recall", k=4, selection="nearest", limit=48)

LESSONS: tuple[Lesson, ...] = (
    Lesson("induction", "Induction heads", 10,
           "A model that has seen `A B … A` predicts `B`: two heads working together — one that looks at the "
           "previous token and one that finds where the current token occurred before and copies what came next. "
           "Find them, then knock them out.",
           (Step("pattern", "See the pattern",
                 "A random sequence repeated twice. The model's strongest induction head is drawn: each row is a "
                 "token, each column a token it may look at.",
                 "In the second copy each token looks back at the token that came *after* its earlier occurrence "
                 "— the token it is about to predict — a stripe running parallel to the diagonal. In the first "
                 "copy there is nothing to find, and attention rests on the first token.",
                 "pattern", "attention",
                 {"toy": {"text": REPEATED_TOY}, "english": {"text": REPEATED_EN}}),
            Step("roles", "Score every head",
                 "Every head scored on a repeated random sequence: how much it attends to the previous token, "
                 "and how much to the token after the current one's earlier occurrence (induction).",
                 "Few heads score high, and they sit in different layers: the previous-token head comes first, "
                 "the induction head later — it reads what the previous-token head wrote.",
                 "roles", "attention", {"toy": {}, "english": {}}),
            Step("knockout", "Knock them out",
                 "Recall (`key = value ;` pairs, then a key asked again) scored three ways: the whole model, "
                 "without its top previous-token and induction heads, and without as many other heads.",
                 "Without the two heads recall falls towards chance; without as many other heads it barely moves. "
                 "The heads are not only correlated with the ability: the model needs them.",
                 "knockout", "interventions", {"toy": dict(RECALL)}),
            )),
    Lesson("demonstrations", "Learning from demonstrations", 10,
           "In-context learning: the same model, no training, only examples in the prompt. How many examples, and "
           "does it matter whether their labels are right?",
           (Step("k-curve", "More demonstrations",
                 "The task scored with 0, 1, 2, 4 and 8 demonstrations, two draws of demonstrations each.",
                 "How accuracy changes as demonstrations are added; the error bars show how much the choice of "
                 "demonstrations alone moves it.",
                 "k_curve", "fewshot",
                 {"toy": dict(RECALL, selection="random", values=(0, 1, 2, 4, 8), seeds=(0, 1)),
                  "english": dict(task="antonyms", k=4, selection="random", limit=24, values=(0, 1, 2, 4, 8),
                                  seeds=(0, 1))},
                 {"toy": "On the toy model recall can answer only when the asked key's pair is among the "
                         "demonstrations, so accuracy is the share of the 12 keys shown: k/12 for every draw.",
                  "english": "Antonyms on SmolLM2: with no demonstration the model does not know the answer is "
                             "one word (0.00); one or two teach the format and the task, and it levels off by "
                             "four."}),
            Step("labels", "Right labels, random labels, flipped labels",
                 "The same demonstrations with their gold labels, with labels drawn at random, and with every "
                 "label flipped.",
                 "Min et al. (2022) found large models lose little with random labels: the format and the label "
                 "words teach most. Flipped labels are followed by models big enough to override what they know "
                 "(Wei et al., 2023); a small model mostly ignores them or breaks.",
                 "labels", "fewshot",
                 {"toy": dict(RECALL, selection="random"),
                  "english": dict(task="sentiment", k=4, selection="balanced", limit=40)},
                 {"toy": "Recall's labels are the values looked up: with random or flipped values there is nothing "
                         "right to retrieve, unlike a sentiment label an English model can judge for itself.",
                  "english": "On SmolLM2 random labels cost nothing measurable on sentiment, as Min et al. found; "
                             "flipped ones cost a little — a 135M model mostly keeps its own judgement."}),
            Step("calibration", "Calibration",
                 "The same prompts, the label probabilities divided by what the model gives each label with no "
                 "input (Zhao et al., 2021, contextual calibration).",
                 "A model biased towards one label word gains accuracy once the bias is divided out.",
                 "calibration", "fewshot",
                 {"english": dict(task="sentiment", k=4, selection="balanced", limit=40)}),
            Step("order", "The order of the demonstrations",
                 "The same four demonstrations (the first of the train split) in five random orders.",
                 "Lu et al. (2022): the order alone can move accuracy by many points; the spread is the lesson.",
                 "order", "fewshot",
                 {"toy": dict(RECALL, selection="first", seeds=(0, 1, 2, 3, 4)),
                  "english": dict(task="sentiment", k=4, selection="first", limit=40, seeds=(0, 1, 2, 3, 4))},
                 {"toy": "Recall is a lookup: wherever the pair stands, the model finds it — the order changes "
                         "nothing."}),
            )),
    Lesson("which-demo", "Which demonstration drove the answer", 5,
           "Attribution gives each part of the prompt a share of the answer. With each demonstration as one "
           "feature, which one did the model use?",
           (Step("segments", "Credit per demonstration",
                 "Integrated gradients over whole demonstrations, the question held as it is: each bar is how much "
                 "that demonstration moved the log-probability of the answer from a prompt whose demonstrations "
                 "are blanked.",
                 "The demonstration that bound the asked key to its value takes most of the credit, the others "
                 "little: attribution says *which example* the model retrieved, not only which words mattered. "
                 "(Untick 'Hold the last feature' in the Attribution tab and the question takes the credit itself: "
                 "a baseline is part of the question an attribution answers.)",
                 "segments", "attribution",
                 {"toy": dict(prompt=RECALL_PROMPT, target=" w42", separator=" ; ", method="ig", hold_query=True)}),
            Step("occlusion", "Take one away",
                 "The same prompt with one demonstration at a time blanked out (occlusion): the drop in the "
                 "answer's log-probability.",
                 "Besides the question itself, only one removal hurts: the answer depends on one demonstration. "
                 "Two methods that agree are stronger evidence than either.",
                 "segments", "attribution",
                 {"toy": dict(prompt=RECALL_PROMPT, target=" w42", separator=" ; ", method="ablation",
                              hold_query=True)}),
            )),
    Lesson("emergence", "Watch an ability appear", 10,
           "The embedded model was trained from scratch for 4,000 steps and kept checkpoints: the ability and the "
           "heads behind it can be watched as they appear. (Train one live in the Emergence tab.)",
           (Step("series", "Recall across training",
                 "In-context recall scored at every checkpoint of the embedded model's training.",
                 "A phase change: recall wanders near chance for the first 1,750 steps, then reaches 1.00 by step "
                 "2,000 and stays — the moment the induction head forms (Olsson et al., 2022). The continuous "
                 "log p(gold) moves a little earlier than accuracy.",
                 "series", "emergence", {"toy": dict(task="recall", k=4, seeds=1, limit=48)}),
            Step("heads", "Heads over training",
                 "The top induction and previous-token scores and the in-context-learning score (loss late in the "
                 "context minus loss early) at every checkpoint.",
                 "At the step where recall jumped (about 2,000) the induction score jumps too and the "
                 "in-context-learning score drops: late tokens become easier to predict than early ones — the "
                 "model now uses its context.",
                 "heads", "emergence", {"toy": {}}),
            )),
    Lesson("finetune", "Prompting or fine-tuning", 5,
           "Two ways to teach a model a task: show it examples in the prompt, or change its weights on them. The "
           "same held-out examples, three ways: the base model with no examples, with six in the prompt, and a "
           "LoRA fine-tuned copy with none.",
           (Step("compare", "Fine-tune, then compare with prompting",
                 "A LoRA adapter (a small low-rank update of the attention weights) is trained on the task's "
                 "training rows behind the page, then the three are scored on the same held-out rows.",
                 "The fine-tuned model answers with no demonstrations at all; prompting the base model helps "
                 "little or not at all on a task it was never trained for. Fine-tuning costs a training run and a copy of the "
                 "weights; prompting costs nothing but context.",
                 "finetune", "finetune",
                 {"toy": dict(task="wordgroups", method="lora", epochs=12, lr=3e-3, batch_size=32, lora_r=32,
                              lora_alpha=64, k=6, limit=100)}),
            )),
    Lesson("function-vectors", "Function vectors", 10,
           "A few heads carry *which task* the demonstrations show. Their average output — a function vector — "
           "added to a prompt with no demonstrations may make the model do the task (Todd et al., 2024).",
           (Step("fv", "Find the heads, add the vector",
                 "Each head's average output is put into prompts whose labels were shuffled; the heads that restore "
                 "the right answer most are summed into the function vector, which is then added at one layer of a "
                 "zero-shot prompt.",
                 "The grid is each head's indirect effect; the curve is zero-shot accuracy with the vector added "
                 "after each layer, beside zero-shot and k-shot without it.",
                 "function_vector", "mechanism",
                 {"toy": dict(task="recall", k=5, limit=24), "english": dict(task="antonyms", k=5, limit=24)},
                 {"toy": "Recall is a lookup, not a function of the query: the heads' effects are tiny and the "
                         "vector lifts zero-shot recall little, far below what five demonstrations do — the "
                         "mechanism belongs to tasks that are functions of the query.",
                  "english": "On SmolLM2 a few heads stand out, but in this `word ->` format the vector barely "
                             "moves zero-shot antonyms: Todd et al. report the effect in models of billions of "
                             "parameters. The heads that stand out are the same few across tasks — try past-tense "
                             "in the Mechanism tab."}),
            )),
)

GLOSSARY: dict[str, str] = {
    "attention head": "one of the parallel attention units of a layer; each row of its map is a token, each "
                      "column a token it reads from",
    "previous-token head": "a head whose every token attends to the token just before it",
    "induction head": "a head that attends to the token after the current token's earlier occurrence, so the "
                      "model can copy what came next (A B … A → B)",
    "sink": "a head that puts most of its attention on the first token: a place to 'do nothing'",
    "entropy": "how spread out a head's attention is (nats); low: it looks at one token",
    "in-context learning": "doing a task from examples in the prompt, with no change to the weights",
    "ICL score": "loss on the 50th token of a context minus loss on the 500th (Olsson et al.); here late minus "
                 "early positions of short contexts: negative when the model uses its context",
    "demonstration": "one solved example in the prompt (input and its label)",
    "k": "the number of demonstrations in the prompt",
    "acc_norm": "accuracy where each choice's log-probability is divided by its length in bytes "
                "(lm-evaluation-harness)",
    "log p(gold)": "the log-probability the model gives the right answer; rises before accuracy does",
    "Brier score": "mean squared error of the predicted probabilities against the right answer (lower is better)",
    "calibration": "dividing label probabilities by what the model gives each label with no input",
    "chance": "the accuracy of guessing: one over the number of choices",
    "ablation": "removing a head's output (zero, or its mean output) and measuring what changes",
    "activation patching": "running a corrupted prompt with one activation taken from the clean run: how much of "
                           "the clean answer it restores",
    "logit lens": "reading each layer's hidden state through the model's output layer",
    "integrated gradients": "an attribution method: gradients summed along a path from a baseline to the input; "
                            "the attributions add up to the change in the output",
    "baseline": "the input attributions are measured against (e.g. every token replaced by padding)",
    "completeness delta": "how far integrated gradients' attributions miss summing to the output's change",
    "function vector": "the summed mean output of the few heads that carry a task; added to a prompt it can "
                       "make the model do the task",
    "task vector": "the hidden state at the last token of a k-shot prompt, put into a zero-shot prompt",
    "phase change": "an ability appearing within few training steps after a long plateau",
    "LoRA": "fine-tuning a small low-rank update of the weights instead of all of them",
}


def lesson(lesson_id: str) -> Lesson:
    for les in LESSONS:
        if les.id == lesson_id:
            return les
    raise UserError(f"No lesson {lesson_id!r}: there are {', '.join(les.id for les in LESSONS)}.")
