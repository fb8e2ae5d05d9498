"""The prefix-cached scorer against one plain forward pass per (context, continuation)."""
import numpy as np
import pytest
import torch

from core.errors import UserError
from core.models.loading import load_model
from core.fewshot.scoring import encode, generate_greedy, score_continuations, split_context
from core.models.types import ModelSpec


def naive_logprob(model, tokenizer, context: str, continuation: str) -> float:
    ctx_text, cont_text = split_context(context, continuation)
    ctx = encode(tokenizer, ctx_text)
    cont = encode(tokenizer, ctx_text + cont_text)[len(ctx):]
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logp = model(ids).logits[0, len(ctx) - 1: -1].float().log_softmax(-1)  # (len(cont), vocab)
    return float(logp.gather(1, torch.tensor(cont)[:, None]).sum())


PREFIX = "Review: good movie\nSentiment: positive\n\nReview: bad movie\nSentiment: negative\n\n"
QUERIES = ["Review: good\nSentiment:", "Review: the movie was bad and the\nSentiment:", "Review: a\nSentiment: "]
CHOICES = [" positive", " negative", " positive negative good"]  # one multi-token choice


@pytest.mark.parametrize("name", ["gpt2_bpe", "llama_bpe"])
def test_cached_scores_equal_plain_forward_passes(bpe_models, name):
    handle = load_model(ModelSpec(str(bpe_models[name]), device="cpu", dtype="float32"))
    model, tok = handle.model, handle.tokenizer
    contexts = [PREFIX + q for q in QUERIES]
    scores = score_continuations(model, tok, contexts, [CHOICES] * len(contexts), batch_tokens=40)
    assert scores.shared_prefix > 10  # the demonstrations really were shared
    for i, ctx in enumerate(contexts):
        for j, choice in enumerate(CHOICES):
            assert scores.logprob[i, j] == pytest.approx(naive_logprob(model, tok, ctx, choice), abs=1e-4)
    assert (scores.n_tokens[:, 2] > 1).all()


@pytest.mark.parametrize("name", ["gpt2", "neox", "llama"])
def test_word_level_models_and_per_query_choices(tiny_models, name):
    handle = load_model(ModelSpec(str(tiny_models[name]), device="cpu", dtype="float32"))
    model, tok = handle.model, handle.tokenizer
    contexts = ["w1 = w2 ; w3 = w4 ; w1 =", "w1 = w2 ; w3 = w4 ; w3 =", "w5 ="]  # no shared prefix for the last
    conts = [[" w2", " w4"], [" w2 w4", " w4"], [" w7", " w8 w9"]]
    scores = score_continuations(model, tok, contexts, conts)
    for i, ctx in enumerate(contexts):
        for j, c in enumerate(conts[i]):
            assert scores.logprob[i, j] == pytest.approx(naive_logprob(model, tok, ctx, c), abs=1e-4)


def test_prompt_over_the_context_is_refused(tiny_models):
    handle = load_model(ModelSpec(str(tiny_models["gpt2"]), device="cpu"))
    with pytest.raises(UserError, match="context holds 64"):
        score_continuations(handle.model, handle.tokenizer, [" ".join(["w1"] * 80)], [[" w2"]])


@pytest.mark.parametrize("name", ["gpt2_bpe", "llama_bpe"])
def test_greedy_generation_equals_generate_without_cache_reuse(bpe_models, name):
    handle = load_model(ModelSpec(str(bpe_models[name]), device="cpu", dtype="float32"))
    model, tok = handle.model, handle.tokenizer
    prefix = "Q: 12 + 30 = 42\nQ: 55 + 11 = 66\n"
    contexts = [prefix + q for q in ["Q: 20 + 21 =", "Q: 3 + 4 =", "Q: 70 + 19 =", "Q: 1 + 1 ="]]
    gens = generate_greedy(model, tok, contexts, max_new_tokens=6, stop=("\n",), batch_tokens=64)
    for ctx, gen in zip(contexts, gens):
        ids = torch.tensor([encode(tok, ctx)])
        with torch.no_grad():
            ref = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)[0, ids.shape[1]:]
        text = tok.decode(ref)
        ref_text = text.split("\n")[0]
        if tok.eos_token_id in ref.tolist():
            ref_text = tok.decode(ref[: ref.tolist().index(tok.eos_token_id)]).split("\n")[0]
        assert gen.text == ref_text
        assert np.array_equal(gen.token_ids, ref[: len(gen.token_ids)].tolist())
