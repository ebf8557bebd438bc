"""A small stand-in for Slurm's commands, enough for submitit to run the sweep's job arrays on this machine:
sbatch, srun, sacct, scancel and scontrol requeue, keeping their state in files under $FAKE_SLURM_DIR.

sbatch reads the #SBATCH lines (the array and its parallelism, the output files, the dependency, the time limit),
records the script, and starts a runner in the background that waits for the dependency, then runs the array's
tasks with Slurm's environment variables, as many at a time as the array allows, ends every process of a task
when it ends (as Slurm does), and reruns a task that asked `scontrol requeue`. With $FAKE_SLURM_PREEMPT_FILE set,
a task running when that file appears gets USR2 (Slurm's warning before the time limit: --signal=USR2@90), once.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

STATE = os.environ.get("FAKE_SLURM_DIR", "/tmp/fake-slurm")
FINISHED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT")


def path(*names):
    os.makedirs(os.path.join(STATE, "jobs"), exist_ok=True)
    return os.path.join(STATE, "jobs", *names)


def read(task, default="PENDING"):
    try:
        with open(path(task + ".state")) as f:
            return f.read().strip()
    except OSError:
        return default


def write(task, state):
    with open(path(task + ".state.tmp"), "w") as f:
        f.write(state)
    os.replace(path(task + ".state.tmp"), path(task + ".state"))


def sbatch(argv):
    script = argv[-1]
    with open(script) as f:
        text = f.read()
    opts = dict(re.findall(r"^#SBATCH --([\w-]+)=(.*)$", text, re.M))
    counter = path("counter")
    job = (int(open(counter).read()) if os.path.exists(counter) else 100) + 1
    with open(counter, "w") as f:
        f.write(str(job))
    first, last, parallel = re.fullmatch(r"(\d+)-(\d+)%?(\d*)", opts.get("array", "0-0")).groups()
    tasks = [f"{job}_{i}" for i in range(int(first), int(last) + 1)]
    for task in tasks:
        write(task, "PENDING")
    with open(path(f"{job}.json"), "w") as f:
        json.dump({"script": script, "opts": opts, "tasks": tasks, "parallel": int(parallel or len(tasks))}, f)
    subprocess.Popen([sys.executable, __file__, "runner", str(job)], start_new_session=True, stdin=subprocess.DEVNULL,
                     stdout=open(path(f"{job}.runner.log"), "a"), stderr=subprocess.STDOUT)
    print(f"Submitted batch job {job}")


def runner(job):
    with open(path(f"{job}.json")) as f:
        spec = json.load(f)
    opts = spec["opts"]
    for dep in re.findall(r"\d+", opts.get("dependency", "")):  # afterany: wait until every task has ended
        while not all(read(t) in FINISHED for t in json.load(open(path(f"{dep}.json")))["tasks"]):
            time.sleep(0.2)
    queue, running = list(spec["tasks"]), {}
    preempt = os.environ.get("FAKE_SLURM_PREEMPT_FILE")
    preempted = preempt is None or os.path.exists(preempt)  # only a file that appears while this array runs
    while queue or running:
        while queue and len(running) < spec["parallel"]:
            task = queue.pop(0)
            if read(task) == "CANCELLED":
                continue
            array, index = task.split("_")
            names = lambda p: p.replace("%A", array).replace("%a", index).replace("%j", task)  # noqa: E731
            for key in ("output", "error"):
                os.makedirs(os.path.dirname(names(opts[key])), exist_ok=True)
            env = {**os.environ, "SLURM_JOB_ID": str(int(array) * 1000 + int(index)), "SLURM_ARRAY_JOB_ID": array,
                   "SLURM_ARRAY_TASK_ID": index, "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0",
                   "SLURM_NTASKS": "1", "SLURM_JOB_NUM_NODES": "1", "SLURM_JOB_NODELIST": "localhost",
                   "SLURM_TIME_LIMIT_MINUTES": opts.get("time", ""), "FAKE_SLURM_TASK": task}
            write(task, "RUNNING")
            running[task] = subprocess.Popen(["bash", spec["script"]], env=env, start_new_session=True,
                                             stdout=open(names(opts["output"]), "a"),
                                             stderr=open(names(opts["error"]), "a"))
            with open(path(task + ".pgid"), "w") as f:
                f.write(str(running[task].pid))
        if not preempted and os.path.exists(preempt):
            for task in running:  # a task whose step has started
                if os.path.exists(path(task + ".pid")):
                    os.kill(int(open(path(task + ".pid")).read()), signal.SIGUSR2)
                    preempted = True
                    break
        for task, proc in list(running.items()):
            if proc.poll() is None:
                continue
            del running[task]
            try:  # as Slurm ends a job: every process of the task, whatever it started
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if os.path.exists(path(task + ".requeue")):
                os.remove(path(task + ".requeue"))
                write(task, "PENDING")
                queue.insert(0, task)
            elif read(task) != "CANCELLED":
                write(task, "COMPLETED" if proc.returncode == 0 else "FAILED")
        time.sleep(0.1)


def srun(argv):
    """srun [--unbuffered] [--output F] [--error F] command...: the command, as this task's step."""
    i, files = 0, {}
    while argv[i].startswith("--"):
        if argv[i] in ("--output", "--error"):
            files[argv[i]] = argv[i + 1]
            i += 2
        else:
            i += 1
    task = os.environ["FAKE_SLURM_TASK"]
    array, index = task.split("_")
    for key, name in files.items():
        name = name.replace("%A", array).replace("%a", index).replace("%t", "0").replace("%j", task)
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(fd, 1 if key == "--output" else 2)
    with open(path(task + ".pid"), "w") as f:
        f.write(str(os.getpid()))
    os.execvp(argv[i], argv[i:])


def sacct(argv):
    ids = [argv[i + 1] for i, a in enumerate(argv) if a == "-j"]
    print("JobID|State|NodeList")
    for job in ids:
        spec = path(f"{job.split('_')[0]}.json")
        if os.path.exists(spec):
            for task in json.load(open(spec))["tasks"]:
                if task == job or job == task.split("_")[0]:
                    print(f"{task}|{read(task)}|localhost")


def scancel(argv):
    for job in argv:
        spec = path(f"{job.split('_')[0]}.json")
        for task in json.load(open(spec))["tasks"] if os.path.exists(spec) else ():
            if task == job or job == task.split("_")[0]:
                write(task, "CANCELLED")
                if os.path.exists(path(task + ".pid")):
                    try:
                        os.kill(int(open(path(task + ".pid")).read()), signal.SIGTERM)
                    except ProcessLookupError:
                        pass


def scontrol(argv):
    """scontrol requeue TASK: the task ends now, every process of it (this one too), and runs again."""
    if argv[:1] == ["requeue"]:
        for task in argv[1].split(","):
            open(path(task + ".requeue"), "w").close()
            os.killpg(int(open(path(task + ".pgid")).read()), signal.SIGKILL)


if __name__ == "__main__":  # fake_slurm.py runner JOB, or fake_slurm.py <the command's path> ARGS (the wrappers)
    if sys.argv[1] == "runner":
        runner(sys.argv[2])
    else:
        commands = {"sbatch": sbatch, "srun": srun, "sacct": sacct, "scancel": scancel, "scontrol": scontrol}
        commands[os.path.basename(sys.argv[1])](sys.argv[2:])
