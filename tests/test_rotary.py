"""siri.ops.rotary_append_kv: bitwise Hugging Face's eager rotary embedding, the cache write,
padding slots, extreme values and bad input."""
import pytest
import torch

from siri.ops import rotary_append_kv, rotary_reference


def dtypes_for(device):
    return [torch.float32, torch.bfloat16] + ([torch.float16] if device.type == "cuda" else [])


def make_inputs(tokens, hq, hkv, d, dtype, device, gen, num_pages=8, page_size=4):
    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).to(device, dtype)

    positions = torch.randint(0, 4096, (tokens,), generator=gen).double()
    inv_freq = 1.0 / (10000 ** (torch.arange(0, d, 2).double() / d))
    angles = torch.cat([positions[:, None] * inv_freq] * 2, dim=-1)
    cos, sin = angles.cos().to(device, dtype), angles.sin().to(device, dtype)
    caches = [torch.full((num_pages, page_size, hkv, d), 7.0, dtype=dtype, device=device) for _ in range(2)]
    return rand(tokens, hq * d, scale=3), rand(tokens, hkv * d, scale=3), rand(tokens, hkv * d), cos, sin, caches


@pytest.mark.parametrize("d", [64, 80, 96, 128, 256])
def test_matches_eager_rotary_bitwise_and_writes_the_cache(device, gen, d):
    for dtype in dtypes_for(device):
        tokens, hkv = int(torch.randint(1, 20, (), generator=gen)), int(torch.randint(1, 4, (), generator=gen))
        hq = hkv * int(torch.randint(1, 5, (), generator=gen))
        q, k, v, cos, sin, (k_cache, v_cache) = make_inputs(tokens, hq, hkv, d, dtype, device, gen)
        slots = torch.randperm(k_cache.shape[0] * k_cache.shape[1], generator=gen)[:tokens].to(device)
        q_rot = rotary_append_kv(q, k, v, cos, sin, k_cache, v_cache, slots)
        assert q_rot.shape == (tokens, hq, d) and q_rot.dtype == dtype
        # bitwise what Hugging Face's apply_rotary_pos_emb computes in this dtype
        assert torch.equal(q_rot, rotary_reference(q.view(tokens, hq, d), cos, sin))
        k_rot = rotary_reference(k.view(tokens, hkv, d), cos, sin)
        flat_k, flat_v = k_cache.view(-1, hkv, d), v_cache.view(-1, hkv, d)
        assert torch.equal(flat_k[slots], k_rot) and torch.equal(flat_v[slots], v.view(tokens, hkv, d))
        untouched = torch.ones(flat_k.shape[0], dtype=torch.bool, device=device)
        untouched[slots] = False
        assert (flat_k[untouched] == 7).all() and (flat_v[untouched] == 7).all()
        # and close to the float64 rotation (the dtype's rounding of three ops)
        exact = rotary_reference(q.view(tokens, hq, d).double(), cos.double(), sin.double())
        tol = {torch.float32: 1e-5, torch.bfloat16: 0.1, torch.float16: 1e-2}[dtype]
        torch.testing.assert_close(q_rot.double(), exact, atol=tol, rtol=tol)


def test_padding_and_out_of_range_slots_write_nothing(device, gen):
    q, k, v, cos, sin, (k_cache, v_cache) = make_inputs(5, 2, 1, 64, torch.float32, device, gen)
    slots = torch.tensor([-1, 32, 1 << 40, -7, 3], device=device)  # 32 = num_pages * page_size
    rotary_append_kv(q, k, v, cos, sin, k_cache, v_cache, slots)
    changed = (k_cache.view(-1, 64) != 7).any(-1)
    assert changed.nonzero().flatten().tolist() == [3]
    assert (v_cache.view(-1, 64) != 7).any(-1).nonzero().flatten().tolist() == [3]


def test_extreme_values_propagate_like_eager(device):
    d = 64
    q = torch.zeros(3, 2 * d, device=device)
    q[0, 0], q[1, 1], q[2, 2] = float("inf"), float("nan"), torch.finfo(torch.float32).max
    k = q[:, :d].clone()
    v = torch.zeros(3, d, device=device)
    cos, sin = torch.full((3, d), 0.5, device=device), torch.full((3, d), 0.25, device=device)
    caches = [torch.zeros(2, 4, 1, d, device=device) for _ in range(2)]
    out = rotary_append_kv(q, k, v, cos, sin, *caches, torch.tensor([0, 1, 2], device=device))
    ref = rotary_reference(q.view(3, 2, d), cos, sin)
    torch.testing.assert_close(out, ref, equal_nan=True, atol=0, rtol=0)


def test_zero_tokens(device):
    caches = [torch.zeros(2, 4, 1, 64, device=device) for _ in range(2)]
    empty = torch.zeros(0, 64, device=device)
    out = rotary_append_kv(torch.zeros(0, 128, device=device), empty, empty, empty, empty, *caches,
                           torch.zeros(0, dtype=torch.long, device=device))
    assert out.shape == (0, 2, 64)


@pytest.mark.parametrize("change, match", [
    (dict(q=torch.zeros(3, 100)), "q must hold a multiple"),
    (dict(k=torch.zeros(3, 128)), "k must be"),
    (dict(v=torch.zeros(3, 64, dtype=torch.bfloat16)), "v must have the dtype"),
    (dict(cos=torch.zeros(3, 32)), "cos.shape"),
    (dict(sin=torch.zeros(64)), "sin must be 2-D"),
    (dict(slots=torch.zeros(3, dtype=torch.int32)), "slot_mapping must have dtype"),
    (dict(slots=torch.zeros(2, dtype=torch.long)), "slot_mapping.shape"),
    (dict(q=torch.zeros(3, 256)[:, ::2]), "q must be contiguous"),
])
def test_bad_input_is_a_clear_error(change, match):
    args = dict(q=torch.zeros(3, 128), k=torch.zeros(3, 64), v=torch.zeros(3, 64), cos=torch.zeros(3, 64),
                sin=torch.zeros(3, 64), slots=torch.zeros(3, dtype=torch.long))
    args.update(change)
    caches = [torch.zeros(2, 4, 1, 64) for _ in range(2)]
    with pytest.raises((ValueError, TypeError), match=match):
        rotary_append_kv(args["q"], args["k"], args["v"], args["cos"], args["sin"], *caches, args["slots"])


def test_opcheck(gen):
    q, k, v, cos, sin, caches = make_inputs(4, 2, 1, 64, torch.float32, torch.device("cpu"), gen)
    torch.library.opcheck(torch.ops.siri.rotary_append_kv, (q, k, v, cos, sin, *caches, torch.arange(4)))
