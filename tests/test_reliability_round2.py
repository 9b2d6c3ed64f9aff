"""Reliability, round 2 (issue 27): a process killed while its math workers are busy leaves nothing behind; reward
functions cannot corrupt training (non-finite rewards, edited inputs, `None` returned)."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest
from datasets import Dataset
from test_kill_cleanup import marked_processes, wait_until
from test_rasft_trainer import make_args
from tiny import math_rows

from rasft_trl import RASFTTrainer

# --------------------------------------------------------------------------------------------------------------
# 1. Killing a process whose math workers (and sandboxed programs) are busy
# --------------------------------------------------------------------------------------------------------------

TOWER = "9^{9^{9^{9}}} - 1"  # sympy evaluates it in one long C call (holding the GIL: no thread of the worker runs)
HOSTILE = f"\\boxed{{{TOWER}}}"

BUSY_CHILD = textwrap.dedent('''
    import signal, sys, threading
    # as in a terminal: a test runner started in the background may have left SIGINT ignored, which children inherit
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from rasft_trl.verifiers import CodeVerifier, MathVerifier, Sandbox

    # the deadline is far away: only the kill can end the task; the magnitude guard is off (`max_digits`), so that
    # the tower reaches a worker as any answer the guard cannot read would
    math = MathVerifier(num_workers=1, timeout=600, max_digits=None)
    assert math.verify("\\\\boxed{{\\\\sqrt{{2}}/2}}", "\\\\frac{{1}}{{\\\\sqrt{{2}}}}").correct  # the worker is ready
    print("WORKER", math._pool._workers[0].process.pid, flush=True)
    # as the trainer calls a reward function: in a daemon thread (`call_with_timeout`)
    threading.Thread(target=math.verify_batch, args=([{hostile!r}], ["1"]), daemon=True).start()
    code = CodeVerifier(sandbox=Sandbox(timeout_s=120, cpu_time_s=120, tmp_root={tmp!r},
                                         env={{"RASFT_TEST_MARKER": {marker!r}}}))
    print("BUSY", flush=True)
    code.verify_batch(["import time\\ntime.sleep(100)"] * 2, ["assert True"] * 2)
    print("DONE", flush=True)
''')


def _cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def _living(processes: list[psutil.Process]) -> list[psutil.Process]:
    living = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                living.append(process)
        except psutil.NoSuchProcess:
            continue
    return living


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=["SIGKILL", "SIGTERM", "Ctrl-C"])
def test_a_process_killed_while_its_math_worker_is_busy_leaves_nothing_behind(how, tmp_path):
    marker = f"rasft-busy-programs-{os.getpid()}-{how}"  # in the sandboxed programs' environment
    tree = f"rasft-busy-tree-{os.getpid()}-{how}"  # in the environment of the process and all its other descendants
    tmp = str(tmp_path / "sandbox-root")
    os.makedirs(tmp)
    env = {**os.environ, "RASFT_TEST_TREE": tree}
    proc = subprocess.Popen([sys.executable, "-c", BUSY_CHILD.format(tmp=tmp, marker=marker, hostile=HOSTILE)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    descendants: list[psutil.Process] = []
    try:
        worker = None
        for line in proc.stdout:
            if line.startswith("WORKER"):
                worker = int(line.split()[1])
            if line.startswith("BUSY"):
                break
        assert worker is not None, proc.stderr.read() if proc.poll() is not None else "no worker"
        assert wait_until(lambda: len(marked_processes(marker)) == 2, 30), "the sandboxed programs did not start"
        time.sleep(4)  # the worker is now inside the tower's power (one C call; no Python code runs in it)
        before = _cpu_seconds(worker)
        time.sleep(1)
        assert _cpu_seconds(worker) - before > 0.3, "the math worker is not busy"
        descendants = psutil.Process(proc.pid).children(recursive=True)
        assert worker in [p.pid for p in descendants]

        proc.send_signal(how)
        proc.wait(timeout=30)
        gone = wait_until(lambda: not (_living(descendants) or marked_processes(marker) or marked_processes(tree)), 5)
        survivors = [(p.pid, " ".join(p.cmdline())[-80:]) for p in _living(descendants)]
        assert gone, (survivors, marked_processes(marker), marked_processes(tree))
        assert wait_until(lambda: not os.listdir(tmp), 5), os.listdir(tmp)
    finally:  # never leave a busy process on the machine, even when the test fails
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for process in _living(descendants):
            process.kill()
        for pid in marked_processes(marker) + marked_processes(tree):
            os.kill(pid, signal.SIGKILL)


def test_a_task_nobody_stops_is_stopped_by_the_kernel_at_the_cpu_limit():
    """The deadline that holds without the trainer: RLIMIT_CPU stops a worker busy in one C call (the tower)."""
    from rasft_trl.verifiers._timeout import KillablePool
    from rasft_trl.verifiers.math import _judge_task, _warm_up_worker

    pool = KillablePool(1, _warm_up_worker, cpu_limit_s=2)
    try:
        start = time.monotonic()
        [outcome] = pool.run(_judge_task, [("1", TOWER, 1e-6)], timeout=120)  # the wall clock never fires
        assert outcome.status == "timeout" and "CPU limit" in outcome.value, outcome
        assert time.monotonic() - start < 30
        assert pool.run(_judge_task, [("\\frac12", "0.5", 1e-6)], timeout=60)[0].value.correct  # a fresh worker
    finally:
        pool.close()


def test_the_cpu_limit_must_leave_the_deadline_first():
    from rasft_trl.verifiers import MathVerifier

    with pytest.raises(ValueError, match="cpu_limit_s must be above timeout=5"):
        MathVerifier(timeout=5, cpu_limit_s=5)
    assert MathVerifier(timeout=5).cpu_limit_s == 15


# --------------------------------------------------------------------------------------------------------------
# 2. Reward functions cannot corrupt training
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [float("inf"), -float("inf")], ids=["inf", "-inf"])
def test_a_non_finite_reward_stops_training_naming_the_function(tmp_path, tiny_model_dir, value):
    def infinite_reward(prompts, completions, **kwargs):
        return [value] + [0.0] * (len(completions) - 1)

    trainer = RASFTTrainer(tiny_model_dir, make_args(tmp_path, max_steps=1), Dataset.from_dict(math_rows(4)),
                           reward_funcs=infinite_reward)
    with pytest.raises(ValueError, match=rf"reward function 'infinite_reward' returned {value} for rollout 0"):
        trainer.train()
    assert trainer.state.global_step == 0


def test_a_non_finite_reward_stops_srft_the_same_way(tmp_path, tiny_model_dir):
    from test_srft import srft_config

    from rasft_trl import SRFTTrainer

    def infinite_reward(prompts, completions, **kwargs):
        return [float("inf")] * len(completions)

    trainer = SRFTTrainer(tiny_model_dir, args=srft_config(tmp_path, max_steps=1),
                          train_dataset=Dataset.from_dict(math_rows(4)), reward_funcs=infinite_reward)
    with pytest.raises(ValueError, match="reward function 'infinite_reward' returned inf"):
        trainer.train()


def test_reward_functions_get_copies_of_what_is_trained(tmp_path, tiny_model_dir):
    """A reward function that edits its arguments in place changes neither the rollouts trained on, nor the prompts
    and completions logged, nor what the next reward function sees."""
    seen_by_second = []

    def vandal(prompts, completions, completion_ids, answer, **kwargs):
        for ids in completion_ids:
            ids[:] = [7] * len(ids)
        for prompt, completion in zip(prompts, completions):
            prompt[0]["content"] = "edited prompt"
            completion[0]["content"] = "edited completion"
        answer[:] = ["0"] * len(answer)
        return [1.0] * len(completions)

    def second(prompts, completions, completion_ids, answer, **kwargs):
        seen_by_second.append((completion_ids, [p[0]["content"] for p in prompts],
                               [c[0]["content"] for c in completions], list(answer)))
        return [None] * len(completions)

    args = make_args(tmp_path, max_steps=1, log_completions=True)
    trainer = RASFTTrainer(tiny_model_dir, args, Dataset.from_dict(math_rows(8)), reward_funcs=[vandal, second])
    generated, trained = [], []
    generate = trainer.generation_backend.generate

    def recording_generate(prompt_ids, k):
        out = generate(prompt_ids, k)
        generated.extend(list(ids) for ids in out)
        return out

    finalize = trainer._finalize_micro_batch

    def recording_finalize(trajectories, coef):
        trained.extend(list(t.completion_ids) for t in trajectories if not t.is_expert)
        return finalize(trajectories, coef)

    trainer.generation_backend.generate = recording_generate
    trainer._finalize_micro_batch = recording_finalize
    trainer.train()
    assert trained and all(ids in generated for ids in trained), "a rollout was trained on edited token ids"
    assert all(ids != [7] * len(ids) for ids in trained)
    for ids, prompts, completions, answers in seen_by_second:
        assert all(i in generated for i in ids)
        assert "edited prompt" not in prompts and "edited completion" not in completions and set(answers) != {"0"}
    logged = trainer._completion_log or []
    assert all("edited" not in str(entry[0]) + str(entry[1]) for entry in logged)


def test_a_reward_function_returning_none_says_so(tmp_path, tiny_model_dir):
    def forgets_to_return(prompts, completions, **kwargs):
        [0.0] * len(completions)  # noqa: B018 (the bug: no `return`)

    trainer = RASFTTrainer(tiny_model_dir, make_args(tmp_path, max_steps=1), Dataset.from_dict(math_rows(4)),
                           reward_funcs=forgets_to_return)
    start = time.monotonic()
    with pytest.raises(TypeError, match="reward function 'forgets_to_return' returned None"):
        trainer.train()
    assert time.monotonic() - start < 120


BACKGROUND_CODE = textwrap.dedent('''
    import signal, threading, time
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from rasft_trl.verifiers import CodeVerifier, Sandbox

    code = CodeVerifier(num_workers=2, sandbox=Sandbox(timeout_s=100, cpu_time_s=100, tmp_root={tmp!r},
                                                      env={{"RASFT_TEST_MARKER": {marker!r}}}))
    # as the trainer calls a reward function: a batch of 4 programs in a daemon thread, 2 at a time
    threading.Thread(target=code.verify_batch, args=(["import time\\ntime.sleep(100)"] * 4, ["assert True"] * 4),
                     daemon=True).start()
    print("BUSY", flush=True)
    time.sleep(600)
''')


@pytest.mark.slow
def test_ctrl_c_while_a_background_thread_verifies_code_exits_at_once(tmp_path):
    """Ctrl-C in the main thread while the code verifier runs a batch in another thread: the interpreter's exit
    would wait for the thread pool, which runs every queued program to its timeout (measured: 10-29 s); the
    verifier's exit hook cancels the queue and kills the running programs."""
    marker = f"rasft-background-programs-{os.getpid()}"
    tmp = str(tmp_path / "sandbox-root")
    os.makedirs(tmp)
    proc = subprocess.Popen([sys.executable, "-c", BACKGROUND_CODE.format(tmp=tmp, marker=marker)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("BUSY")
        assert wait_until(lambda: len(marked_processes(marker)) >= 2, 60)  # both programs running
        start = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        elapsed = time.monotonic() - start
    finally:
        if proc.poll() is None:
            proc.kill()
    assert elapsed < 5, f"exit took {elapsed:.1f} s"
    assert wait_until(lambda: not marked_processes(marker), 5)
    assert os.listdir(tmp) == [], "the programs' folders are removed"
