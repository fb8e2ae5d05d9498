"""Named-entity recognition: entity F1 against seqeval, CoNLL files, sub-word alignment, the built-in task,
training, reload and the real MiniLM encoder."""
import pytest

from core.errors import UserError
from core.finetune import ner
from core.finetune.ner_metrics import confusion, entities, score

CASES = [  # (gold, predicted): exact, partial, type-mismatched, I- without B-, adjacent spans, nothing found
    ([["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "I-PER", "O", "B-LOC"]]),
    ([["B-PER", "I-PER", "O"]], [["B-PER", "O", "O"]]),                      # partial: too short
    ([["B-PER", "O", "O"]], [["B-PER", "I-PER", "O"]]),                      # partial: too long
    ([["B-ORG", "I-ORG", "O"]], [["B-LOC", "I-LOC", "O"]]),                  # right span, wrong type
    ([["B-ORG", "I-ORG", "O"]], [["B-ORG", "I-LOC", "O"]]),                  # type changes inside a span
    ([["O", "I-PER", "I-PER", "O"]], [["O", "B-PER", "I-PER", "O"]]),        # I- opening a chunk (conlleval)
    ([["B-PER", "B-PER", "O"]], [["B-PER", "I-PER", "O"]]),                  # two adjacent vs one merged
    ([["B-LOC", "O"], ["O", "B-ORG"]], [["O", "O"], ["O", "O"]]),            # nothing predicted
    ([["O", "O"]], [["B-MISC", "O"]]),                                       # nothing to find
    ([["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "I-LOC"], ["B-ORG", "O", "B-PER"]],
     [["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O"], ["B-ORG", "O", "B-LOC"]]),
]


@pytest.mark.parametrize("gold,pred", CASES)
def test_entity_scores_agree_with_seqeval(gold, pred):
    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
    ours = score(gold, pred)
    assert ours.overall.precision == pytest.approx(precision_score(gold, pred, zero_division=0))
    assert ours.overall.recall == pytest.approx(recall_score(gold, pred, zero_division=0))
    assert ours.overall.f1 == pytest.approx(f1_score(gold, pred, zero_division=0))
    theirs = classification_report(gold, pred, output_dict=True, zero_division=0)
    for ty, prf in ours.per_type.items():
        assert prf.f1 == pytest.approx(theirs[ty]["f1-score"]) and prf.support == theirs[ty]["support"]


def test_chunks_and_confusion_by_type():
    assert entities(["B-PER", "I-PER", "O", "I-LOC", "B-ORG", "I-ORG"]) == [("PER", 0, 1), ("LOC", 3, 3),
                                                                           ("ORG", 4, 5)]
    table = confusion([["B-PER", "I-PER", "O"]], [["B-PER", "B-LOC", "O"]])
    assert table["PER"] == {"LOC": 1, "PER": 1, "O": 0} and table["O"]["O"] == 1


def test_conll_files_read_with_clear_errors(tmp_path):
    text = "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nPeter B-PER\nBlackburn I-PER\n"
    sents = ner.parse_conll(text, "train.conll")  # CoNLL-2003's four columns: the tag is the last
    assert [s.tokens for s in sents] == [("EU", "rejects"), ("Peter", "Blackburn")]
    assert sents[1].tags == ("B-PER", "I-PER")
    with pytest.raises(UserError, match="line 2: 'Peter' has a token but no tag"):
        ner.parse_conll("EU B-ORG\nPeter\n", "f.conll")
    with pytest.raises(UserError, match="line 1: tag 'PERSON' is not BIO"):
        ner.parse_conll("Peter PERSON\n", "f.conll")
    with pytest.raises(UserError, match="holds no sentences"):
        ner.parse_conll("\n\n", "f.conll")
    (tmp_path / "only_o.conll").write_text("a O\nb O\n\nc O\n")
    with pytest.raises(UserError, match="no entity tags"):
        ner.task_from_files(str(tmp_path / "only_o.conll"), None)
    assert ner.to_conll(sents[1:]) == "Peter B-PER\nBlackburn I-PER\n"


def test_the_first_sub_token_of_each_word_carries_its_tag(bpe_models):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(bpe_models["llama_bpe"])  # byte-level BPE with a BOS token
    s = ner.Sentence(("Zanzibarian", "wombats", "met", "Kofi"), ("B-LOC", "O", "O", "B-PER"))
    labels = {t: i for i, t in enumerate(("O", "B-LOC", "B-PER"))}
    ids, lab, words = ner.encode_sentence(tok, s, labels)
    assert len(ids) > len(s.tokens) + 1  # some words split into several tokens
    assert [lab[i] for i, w in enumerate(words) if w >= 0] == [1, 0, 0, 2]  # one label per word, in order
    assert sorted(w for w in words if w >= 0) == [0, 1, 2, 3]
    assert lab[0] == -100 and words[0] == -1  # the BOS
    assert sum(x != -100 for x in lab) == 4  # every continuation ignored
    assert ner.word_tags([labels[t] for t in ("O", "B-LOC", "B-PER")] * 10, words, 4,
                         ("O", "B-LOC", "B-PER"))[:1] in (["O"], ["B-LOC"], ["B-PER"])


def test_the_built_in_task_tests_names_never_seen_in_training():
    task = ner.load_token_task("ner")
    assert len(task.train) >= 500 and len(task.test) >= 200
    assert task.labels == ("O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER")
    seen = {w for s in task.train for w, t in zip(s.tokens, s.tags) if t in ("B-PER", "I-PER", "B-LOC")}
    tested = {w for s in task.test for w, t in zip(s.tokens, s.tags) if t in ("B-PER", "I-PER", "B-LOC")}
    assert seen and tested and not seen & tested  # people and places: no name in both splits
    frames = lambda split: {" ".join(w if t == "O" else "_" for w, t in zip(s.tokens, s.tags)) for s in split}
    assert frames(task.test) - frames(task.train)  # and some sentence frames are new


def test_a_token_classifier_trains_reloads_and_scores_the_same(tmp_path, tiny_models):
    from core.finetune.evaluate import token_scores
    from core.finetune.train import train_run
    from core.finetune.types import DataSpec, FinetuneSpec
    from core.models.loading import load_model
    from core.models.types import ModelSpec
    spec = FinetuneSpec(model=str(tiny_models["bert"]), data=DataSpec(task="ner", max_eval=60),
                        objective="token-classification", method="full", lr=3e-3, max_steps=30, batch_size=16)
    metrics = train_run(spec, tmp_path / "run")
    assert metrics["eval_loss"][-1] < metrics["eval_loss"][0] and metrics["eval_f1"] is not None
    handle = load_model(ModelSpec(model=metrics["model_path"]))
    assert handle.info.kind == "token_cls" and "token-classification head" in handle.info.heads
    task = ner.load_token_task("ner")
    task = type(task)(task.name, task.train, task.test[:60], task.labels)
    again = token_scores(handle.model, handle.tokenizer, task)
    assert again.overall.f1 == metrics["eval_f1"] and again.token_accuracy == metrics["eval_accuracy"]


def test_token_classification_from_the_cli_and_a_conll_upload(tmp_path, tiny_models, capsys):
    import json
    from core.cli import main
    train = tmp_path / "train.conll"
    train.write_text(ner.to_conll(ner.load_token_task("ner").train[:40]))
    main(["finetune", "--model", str(tiny_models["bert"]), "--train", str(train), "--objective",
          "token-classification", "--method", "lora", "--max-steps", "4", "--out", str(tmp_path / "run")])
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["objective"] == "token-classification" and metrics["steps"] == 4
    assert 0 <= metrics["eval_f1"] <= 1 and metrics["trainable_params"] < metrics["total_params"]


def test_a_causal_model_refuses_to_prompt_for_tags_but_an_encoder_tags(tiny_models):
    from core.finetune.tagging import TagRequest, tag
    from core.models.loading import load_model
    from core.models.types import ModelSpec
    handle = load_model(ModelSpec(model=str(tiny_models["gpt2"])))
    with pytest.raises(UserError, match="needs a token classifier"):
        tag(handle, TagRequest(model=handle.info.key, text="a b"))


@pytest.mark.slow
def test_minilm_learns_the_names_it_never_saw(tmp_path):
    """The issue's acceptance at a shorter budget (the README's figure is the full run, bench/ner_minilm.py)."""
    from conftest import needs_package  # noqa: F401
    from core.finetune.train import train_run
    from core.finetune.types import DataSpec, FinetuneSpec
    from core.models.packaged import find_packaged
    if not find_packaged("minilm-l6").installed():
        pytest.skip(f"minilm-l6 is not installed: {find_packaged('minilm-l6').install}")
    spec = FinetuneSpec(model="minilm-l6", data=DataSpec(task="ner", max_eval=120),
                        objective="token-classification", method="full", lr=3e-4, epochs=1, batch_size=16)
    metrics = train_run(spec, tmp_path / "run")
    assert metrics["eval_f1"] >= 0.85, metrics["eval_f1"]
