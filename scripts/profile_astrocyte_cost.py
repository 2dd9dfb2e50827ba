"""Where the astrocyte's training cost goes: ``torch.profiler`` of one training step
(forward + backward) of the AM-SNet and of its astrocyte-off ablation, one thread.
Self CPU time per (op, input shapes), the minimum over ``runs`` interleaved profiled
steps (on a shared machine the minimum is the least disturbed), then the ops the
astrocyte adds, largest first; then the scan's batched product's rate against the
model's and a large sgemm (docs/benchmarks.md, issue 14, third round).

With a fifth argument ``transformer`` the AM-SNet is compared with the Transformer of the
same shape instead of the ablation (docs/notes.md, thirteenth session).

    PYTHONPATH=$PWD python scripts/profile_astrocyte_cost.py [d_model T batch runs [transformer]]
"""

from __future__ import annotations

import sys

import torch
from torch.profiler import ProfilerActivity, profile

from astro_neuron.lm.config import AMSNetConfig
from astro_neuron.lm.model import build_model


def main() -> None:
    torch.set_num_threads(1)
    d, T, B, runs = (int(a) for a in sys.argv[1:5]) if len(sys.argv) > 4 else (128, 256, 16, 5)
    tf = len(sys.argv) > 5 and sys.argv[5] == "transformer"
    other, label = ({"arch": "transformer"}, "Transformer") if tf else \
        ({"astrocyte": False}, "astrocyte off")
    x = torch.randint(0, 256, (B, T))
    models = {}
    for name, extra in (("am", {}), ("off", other)):
        torch.manual_seed(0)
        models[name] = build_model(AMSNetConfig(n_layer=2, d_model=d, n_head=max(1, d // 64),
                                                block_size=T, **extra))

    def step(m):
        m.zero_grad(set_to_none=True)
        _, loss = m(x, x)
        loss.backward()

    for m in models.values():
        step(m), step(m)
    best: dict = {n: {} for n in models}
    for _ in range(runs):
        for n, m in models.items():
            with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                step(m)
            for e in prof.key_averages(group_by_input_shape=True):
                if e.key.startswith(("aten::", "_")) or "Backward" in e.key:
                    k = (e.key, str(e.input_shapes)[:60])
                    v = (e.self_cpu_time_total / 1e3, e.count)
                    if k not in best[n] or v[0] < best[n][k][0]:
                        best[n][k] = v
    tot = {n: sum(v[0] for v in best[n].values()) for n in best}
    print(f"d_model {d}, T {T}, batch {B}, one thread, min over {runs} steps: sum of per-op "
          f"minima AM-SNet {tot['am']:.1f} ms, {label} {tot['off']:.1f} ms")
    keys = set(best["am"]) | set(best["off"])
    diff = sorted(((best["am"].get(k, (0, 0))[0] - best["off"].get(k, (0, 0))[0], k)
                   for k in keys), reverse=True)
    mat = ("aten::mm", "aten::bmm", "aten::baddbmm_", "aten::addmm_", "aten::addmm",
           "aten::baddbmm")
    for what, pick in (("matrix products", lambda k: k[0] in mat),
                       ("everything else", lambda k: k[0] not in mat)):
        a = sum(v[0] for k, v in best["am"].items() if pick(k))
        o = sum(v[0] for k, v in best["off"].items() if pick(k))
        print(f"{what}: AM-SNet {a:.1f} ms, {label} {o:.1f} ms, extra {a - o:.1f} ms")
    print(f"{'op':<32} {'input shapes':<60} {'AM ms':>7} {'off ms':>7} {'extra':>7} "
          f"{'AM n':>5} {'off n':>5}")
    for dd, k in diff[:30]:
        a, o = best["am"].get(k, (0, 0)), best["off"].get(k, (0, 0))
        print(f"{k[0][:32]:<32} {k[1]:<60} {a[0]:>7.2f} {o[0]:>7.2f} {dd:>7.2f} "
              f"{a[1]:>5} {o[1]:>5}")

    products()


def products(rounds: int = 3) -> None:
    """The scan's batched product against the model's and a large sgemm (GFLOP/s,
    best of 30 calls), and one [128, 64, 128] product against two [128, 64, 64]."""
    import time

    def best(f, n: int = 30) -> float:
        f()
        b = float("inf")
        for _ in range(n):
            t0 = time.perf_counter()
            f()
            b = min(b, time.perf_counter() - t0)
        return b

    a, b, b2 = torch.randn(128, 64, 64), torch.randn(128, 64, 64), torch.randn(128, 64, 128)
    x, w, big = torch.randn(4096, 128), torch.randn(128, 512), torch.randn(2048, 2048)
    for _ in range(rounds):
        t1 = best(lambda: torch.bmm(a, b))
        t2 = best(lambda: torch.bmm(a, b2))
        t3 = best(lambda: torch.mm(x, w))
        t4 = best(lambda: torch.mm(big, big), 3)
        print(f"bmm [128, 64, 64]^2 {2 * 128 * 64 ** 3 / t1 / 1e9:.1f} GFLOP/s; one "
              f"[128, 64, 128] product {t2 * 1e3:.2f} ms against two [128, 64, 64] "
              f"{2 * t1 * 1e3:.2f} ms; mm [4096, 128] x [128, 512] "
              f"{2 * 4096 * 128 * 512 / t3 / 1e9:.1f} GFLOP/s; sgemm 2048 "
              f"{2 * 2048 ** 3 / t4 / 1e9:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
