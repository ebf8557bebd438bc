"""The sweep on a Slurm cluster, through submitit (pip install -e ".[slurm]"): a thin adapter, not a scheduler.

One job array per stage of the plan (the pre-trainings, then what is derived from them), each stage's array
depending on the one before ("afterany": a failed job does not hold the others back; a job whose own dependency
failed refuses in one line). Every task runs `python research/experiments.py --run-job ID ...`, so nothing of
research/ is pickled: submitit gets a command. The time limit is always set; a task that is pre-empted or reaches
it is requeued and resumes from its checkpoint (--run-job passes --resume). --out must be a folder every node
sees (a shared file system): the run folders are where the jobs meet.
"""
import functools
import os
import sys

from tinymae.errors import TinymaeError


def run_slurm(todo, jobs, args, arguments):
    """Submit the jobs as one array per stage, wait for them all -> {failed job id: its log}."""
    try:
        import submitit
    except ImportError:
        raise TinymaeError("--engine slurm needs submitit: pip install -e '.[slurm]'") from None
    executor = submitit.AutoExecutor(folder=os.path.join(args.out, "slurm", "%j"), cluster="slurm")
    executor.update_parameters(name="tinymae", timeout_min=args.slurm_time, cpus_per_task=args.slurm_cpus,
                               slurm_array_parallelism=args.slurm_parallel, slurm_partition=args.slurm_partition,
                               gpus_per_node=args.slurm_gpus or None)
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "experiments.py")
    left, placed = list(todo), {job.id for job in jobs.values()} - {job.id for job in todo}
    submitted, previous = [], None
    while left:  # the next stage: the jobs whose dependencies are all in earlier stages (or done already)
        stage = [job for job in left if all(dep in placed for dep in job.after)]
        placed |= {job.id for job in stage}
        left = [job for job in left if job.id not in placed]
        if previous is not None:
            executor.update_parameters(slurm_additional_parameters={"dependency": f"afterany:{previous}"})
        commands = [submitit.helpers.CommandFunction([sys.executable, script, "--run-job", job.id, *arguments],
                                                     verbose=True) for job in stage]
        # submitit requeues a task that reaches its time limit only if the function can be checkpointed: the
        # same command again, which resumes from the run's checkpoint.
        for command in commands:
            command.checkpoint = functools.partial(submitit.helpers.DelayedSubmission, command)
        with executor.batch():
            tasks = [executor.submit(command) for command in commands]
        submitted += zip(stage, tasks)
        previous = tasks[0].job_id.split("_")[0]
        print(f"submitted {len(stage)} jobs as the array {previous}", flush=True)
    failed = {}
    for job, task in submitted:
        try:
            task.result()
        except Exception as e:  # the task failed, or was cancelled: its log says why
            failed[job.id] = f"{task.paths.stderr} ({type(e).__name__})"
    return failed
