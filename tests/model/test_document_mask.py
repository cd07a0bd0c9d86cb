"""Document masking: with a document separator a token attends only to the earlier tokens of its own document in
the window, in training, evaluation and KV-cached sampling; ``reset_positions`` restarts positions at each one."""

from __future__ import annotations

import pytest
import torch

from model import GPT, GPTConfig
from model.generate import KVCache, generate
from model.gpt import document_mask, document_starts, flex_attention

SEP, V, BLOCK = 0, 64, 32
ARCHS = [("gpt2", False), ("gpt2", True), ("llama", False), ("llama", True)]
IDS = ["gpt2", "gpt2-reset", "llama", "llama-reset"]


def models(arch: str, reset: bool, n_embd: int = 32) -> tuple[GPT, GPT]:
    """A plain causal model and a document-masked one with the same weights, in eval mode."""
    torch.manual_seed(0)
    base = dict(vocab_size=V, block_size=BLOCK, n_layer=2, n_head=4, n_kv_head=2, n_embd=n_embd, arch=arch)
    plain = GPT(GPTConfig(**base)).eval()
    masked = GPT(GPTConfig(**base, document_separator=SEP, reset_positions=reset)).eval()
    masked.load_state_dict(plain.state_dict())
    return plain, masked


def text(*shape: int) -> torch.Tensor:
    """Token ids without a separator."""
    return torch.randint(1, V, shape)


def logits(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    out, _ = model(idx, idx)  # with targets: every position's logits
    return out


@pytest.mark.parametrize("arch,reset", ARCHS, ids=IDS)
def test_a_tokens_output_is_unchanged_when_earlier_documents_in_its_window_change(arch, reset):
    _, model = models(arch, reset)
    idx = text(3, BLOCK)
    idx[:, [7, 19]] = SEP  # three documents: [0, 7), [7, 19), [19, 32)
    other = idx.clone()
    other[:, :7] = text(3, 7)  # another first document
    other[:, 8:19] = text(3, 11)  # and another second one, the separators where they were
    a, b = logits(model, idx), logits(model, other)
    torch.testing.assert_close(a[:, 19:], b[:, 19:], rtol=0, atol=1e-6)  # the last document cannot see them
    assert (a[:, 8:19] - b[:, 8:19]).abs().max() > 1e-3  # while the changed ones do change


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_with_reset_positions_a_document_reads_the_same_wherever_it_starts(arch):
    _, model = models(arch, reset=True)
    _, absolute = models(arch, reset=False)
    doc = text(2, 12)
    early, late = text(2, BLOCK), text(2, BLOCK)
    early[:, 4], late[:, 15] = SEP, SEP
    early[:, 5:17], late[:, 16:28] = doc, doc  # the same document after a shorter and a longer one
    torch.testing.assert_close(logits(model, early)[:, 4:17], logits(model, late)[:, 15:28], rtol=0, atol=1e-5)
    moved = (logits(absolute, early)[:, 4:17] - logits(absolute, late)[:, 15:28]).abs().max()
    if arch == "gpt2":  # learned positions: without the reset the outputs depend on where the document starts
        assert moved > 1e-3
    else:  # rotary attention sees only relative positions, so a masked document reads the same anyway
        assert moved < 1e-4


@pytest.mark.parametrize("arch,reset", ARCHS, ids=IDS)
def test_one_document_per_window_equals_plain_causal_attention(arch, reset):
    plain, masked = models(arch, reset)
    idx = text(3, BLOCK)  # no separator: the whole window is one document
    (a, loss_a), (b, loss_b) = plain(idx, idx), masked(idx, idx)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    torch.testing.assert_close(loss_a, loss_b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("arch,reset", ARCHS, ids=IDS)
def test_kv_cached_decoding_equals_the_full_forward_across_documents(arch, reset):
    """Sampling follows the rule: a cached step sees only its own document, even when a separator arrives."""
    _, model = models(arch, reset)
    idx = text(2, 24)
    idx[0, [5, 14]] = SEP
    idx[1, 17] = SEP  # rows meet separators at different steps
    full = logits(model, idx)
    cache = KVCache(model.config, 2, BLOCK)
    with torch.no_grad():
        steps = [model(idx[:, :6], cache=cache)[0][:, -1]]  # a prompt, then one token at a time
        steps += [model(idx[:, i : i + 1], cache=cache)[0][:, -1] for i in range(6, 24)]
    torch.testing.assert_close(torch.stack(steps, 1), full[:, 5:], rtol=0, atol=1e-5)


def test_sampling_with_and_without_the_kv_cache_agrees_on_a_masked_model():
    _, model = models("llama", reset=True)
    prompt = text(2, 10)
    prompt[0, 3] = SEP
    with_cache = generate(model, prompt, 12, temperature=0, use_cache=True)
    assert torch.equal(with_cache, generate(model, prompt, 12, temperature=0, use_cache=False))


def test_document_starts_begin_at_each_separator_and_carry_over_from_the_cache():
    idx = torch.tensor([[5, 0, 3, 4, 0, 0, 7], [1, 2, 3, 4, 5, 6, 7]])
    assert document_starts(idx, SEP).tolist() == [[0, 1, 1, 1, 4, 5, 5], [0] * 7]
    carried = torch.tensor([9, 3])  # a cached document that began at 9 (row 0) or 3 (row 1)
    later = document_starts(idx[:, :2], SEP, start=12, carried=carried)
    assert later.tolist() == [[9, 13], [3, 3]]


@pytest.mark.cuda
@pytest.mark.parametrize("arch,reset", ARCHS, ids=IDS)
def test_on_cuda_flex_attention_gives_what_the_boolean_mask_gives(arch, reset, monkeypatch):
    """The GPU's training path (FlexAttention with a block mask, compiled) against the CPU one, forward and
    backward, eager and inside a compiled model; and its evaluation path. In fp32 without TF32, which a run
    allows (and which would round the matmuls to 10 bits)."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    _, model = models(arch, reset, n_embd=64)  # FlexAttention's kernels take heads of 16 or more
    model.train()
    idx = text(4, BLOCK)
    idx[0, [3, 20]], idx[2, 31] = SEP, SEP
    cpu_logits, cpu_loss = model(idx, idx)
    cpu_loss.backward()
    cpu_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    gpu = model.to("cuda")
    for forward in (gpu, torch.compile(gpu)):
        gpu_logits, gpu_loss = forward(idx.cuda(), idx.cuda())
        gpu_loss.backward()
        torch.testing.assert_close(gpu_logits.cpu(), cpu_logits, rtol=1e-4, atol=1e-4)
        for p, expected in zip(gpu.parameters(), cpu_grads, strict=True):
            torch.testing.assert_close(p.grad.cpu(), expected, rtol=1e-3, atol=1e-4)
        gpu.zero_grad()
    with torch.no_grad():  # evaluation on the GPU: the boolean mask
        torch.testing.assert_close(gpu.eval()(idx.cuda(), idx.cuda())[0].cpu(), cpu_logits, rtol=1e-4, atol=1e-4)
    q, k, v = (torch.randn(2, 4, 256, 16, device="cuda") for _ in range(3))
    starts = document_starts(torch.randint(0, 8, (2, 256), device="cuda"), SEP)
    block_mask = document_mask(starts, 0, 256, flex=True)
    boolean = document_mask(starts, 0, 256, flex=False)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=boolean)
    torch.testing.assert_close(flex_attention(q, k, v, block_mask, enable_gqa=False), expected, rtol=1e-4, atol=1e-4)
