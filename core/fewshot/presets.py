"""One-click reproductions of the classic in-context-learning experiments.

Each preset names the configurations to compare, the axis to sweep and the
metrics to plot, with a two-line explanation for teaching. ``task_for`` picks a
task the model can read: the embedded models speak only their synthetic
language, so they get the recall task; other models get the preset's own.
"""
from __future__ import annotations

from dataclasses import dataclass

from core.fewshot.types import FewShotConfig


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    explanation: str
    task: str                                   # for general models
    configs: tuple[FewShotConfig, ...]
    axis: str = "k"
    values: tuple = (0, 1, 2, 4, 8)
    seeds: tuple[int, ...] = (0, 1, 2)
    metrics: tuple[str, ...] = ("accuracy",)
    embedded_task: str = "recall"
    embedded_values: tuple | None = (0, 2, 4, 8, 12)

    def values_for(self, embedded: bool) -> tuple:
        return self.embedded_values if embedded and self.embedded_values else self.values


PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("brown2020", "Accuracy vs number of demonstrations (Brown et al. 2020)",
           "More demonstrations in the prompt, higher accuracy, without changing a weight. "
           "In GPT-3 the gain grew with model size: larger models learn more from the same examples.",
           "antonyms", (FewShotConfig(selection="random", name="random demonstrations"),)),
    Preset("min2022", "Gold vs random labels (Min et al. 2022)",
           "Replacing the demonstrations' labels by random ones barely hurt large pretrained models: "
           "they use the demonstrations for the format and label space more than for the mapping.",
           "sentiment", (FewShotConfig(selection="random", name="gold labels"),
                         FewShotConfig(selection="random", perturb="random", name="random labels"))),
    Preset("wei2023", "Flipped labels (Wei et al. 2023)",
           "Flip a growing share of the demonstrations' labels: small models keep their prior, "
           "large ones follow the flipped labels and fall below chance.",
           "sentiment", (FewShotConfig(k=8, selection="balanced", name="flipped share"),),
           axis="flip_fraction", values=(0.0, 0.25, 0.5, 0.75, 1.0), embedded_values=(0.0, 0.25, 0.5, 0.75, 1.0)),
    Preset("zhao2021", "Contextual calibration (Zhao et al. 2021)",
           "Label probabilities are biased toward the majority and the most recent label. Dividing by the "
           "probabilities given a content-free input ('N/A') removes much of that bias.",
           "sentiment", (FewShotConfig(selection="random", calibrate=True, name="raw vs calibrated"),),
           metrics=("accuracy", "accuracy_calibrated")),
    Preset("lu2022", "Order sensitivity (Lu et al. 2022)",
           "The same four demonstrations in different orders: accuracy spreads from near chance to "
           "near the best, so one ordering's score says little.",
           "sentiment", (FewShotConfig(k=4, selection="first", order="random", name="4 demos, shuffled"),),
           axis="seed", values=tuple(range(12)), seeds=(0,), embedded_values=tuple(range(12))),
    Preset("schaeffer2023", "Exact match vs a continuous metric (Schaeffer et al. 2023)",
           "Exact match jumps only when every answer token is right; the log-probability of the gold "
           "answer scores the same outputs and improves smoothly. Sudden-looking abilities can be the metric.",
           "addition", (FewShotConfig(selection="random", name="greedy answers"),),
           metrics=("accuracy", "mean_gold_logprob")),
]}


def task_for(preset: Preset, embedded: bool) -> str:
    return preset.embedded_task if embedded else preset.task
