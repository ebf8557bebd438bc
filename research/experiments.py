"""The MAE paper's protocols and ablations on 48-pixel photos: the sweep behind docs/results.md and docs/recipe.md.

    python research/experiments.py --data data/catsdogs                   # every job, one at a time (resumable)
    python research/experiments.py --data data/catsdogs --jobs 2          # two at a time, each on its share of cores
    python research/experiments.py --data data/catsdogs --engine slurm --out /shared/sweep   # a Slurm cluster
    python research/experiments.py --list-jobs                            # the plan: one JSON line per job
    python research/experiments.py --data data/catsdogs --run-job ID      # one job, as every engine runs it

The plan (plan.py) is data: one job per command, each in its own folder under --out. The run folders are the only
truth: a rerun starts only the jobs not done, a killed pre-training or fine-tuning resumes from its checkpoint, a
job that fails is retried once while the others go on, and the command ends non-zero naming each failed job and
its log. A finished job trained on other photos than --data's is refused, never reused. Then the report
(report.py): every finished job's numbers and provenance go into results.json, and the pages are written from it
into --docs (a folder of your own by default; --docs docs regenerates the project's pages).
"""
import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time

from tinymae import __version__
from tinymae.config import MODEL_CONFIGS, check
from tinymae.errors import TinymaeError
from tinymae.fast.cpu import cpu_count
from tinymae.photos import decode, find_photos, fingerprint
from tinymae.util import cli
from tinymae.util.files import RunLock, write_atomically

from plan import PARTS, command, model_flags, plan

DEFAULT_DATA = os.path.join("data", "catsdogs")  # where the README's main command puts the photos


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python research/experiments.py", description=__doc__.split("\n\n")[0],
                                formatter_class=cli.HelpFormatter)
    p.add_argument("--data", default=DEFAULT_DATA, help="the photo folder")
    p.add_argument("--out", default=os.path.join("runs", "experiments"), help="one sub-folder per run; on a cluster, "
                                                                              "a folder every node can see")
    p.add_argument("--docs", default=os.path.join("<out>", "report"), help="where results.json and the pages go; "
                                                                         "--docs docs rewrites the project's pages")
    p.add_argument("--part", choices=("all", *PARTS), default="all",
                   help="the jobs of one part only (and the pre-trainings they need)")
    p.add_argument("--epochs", type=int, default=50, help="epochs of the base pre-training and of fine-tuning")
    p.add_argument("--per-class", type=int, default=None,
                   help="only the first N photos of each class (a quick try; default: all)")
    p.add_argument("--probe-seeds", type=int, default=3, help="linear-probe repetitions (mean ± std)")
    p.add_argument("--labels", nargs="+", default=["50", "200", "all"],
                   help="labelled photos per class of the fine-tuning table, fewest first, 'all' last (default: 50 200 "
                        "all)")
    p.add_argument("--model", default="", help="extra model or recipe flags for every run, e.g. a tiny model for "
                                               "a test")
    p.add_argument("--list-jobs", action="store_true", help="print the plan, one JSON line per job, and stop")
    p.add_argument("--run-job", metavar="ID", help="run that one job (0 at once if it is done; refused if a job it "
                                                   "needs is not)")
    p.add_argument("--jobs", type=int, default=1, help="jobs at a time on this machine, each on cores / N cores")
    p.add_argument("--engine", choices=("local", "slurm"), default="local", help="where the jobs run")
    p.add_argument("--slurm-partition", default=None, help="Slurm partition (default: the cluster's)")
    p.add_argument("--slurm-time", type=int, default=240, help="Slurm time limit per job, minutes (a job that reaches "
                                                              "it is requeued and resumes from its checkpoint)")
    p.add_argument("--slurm-cpus", type=int, default=2, help="CPUs per Slurm job")
    p.add_argument("--slurm-gpus", type=int, default=0, help="GPUs per Slurm job (with TINYMAE_BACKEND=cupy)")
    p.add_argument("--slurm-parallel", type=int, default=64, help="Slurm jobs of one stage running at once")
    p.add_argument("--no-report", action="store_true", help="run the jobs only")
    p.add_argument("--report-only", action="store_true", help="no job: results.json and the pages, from the folders")
    args = p.parse_args(argv)
    for name in ("epochs", "per_class", "probe_seeds", "jobs", "slurm_time", "slurm_cpus", "slurm_parallel"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    try:
        args.labels = [None if n == "all" else int(n) for n in args.labels]
    except ValueError:
        p.error(f"--labels takes whole numbers and 'all', got {' '.join(args.labels)}")
    if args.labels[-1] is not None or len(args.labels) < 2 or any(n is None or n < 1 for n in args.labels[:-1]):
        p.error(f"--labels: labelled photos per class (at least 1), then 'all' last, got {args.labels}")
    args.docs = args.docs.replace("<out>", args.out)
    return args


def arguments(args):
    """The arguments that make the plan, for a job's own command line."""
    words = ["--data", args.data, "--out", args.out, "--epochs", str(args.epochs), "--probe-seeds",
             str(args.probe_seeds), "--labels", *[str(n or "all") for n in args.labels], "--model", args.model]
    return words + (["--per-class", str(args.per_class)] if args.per_class else [])


def is_done(job, args):
    return os.path.exists(os.path.join(args.out, job.done))


def run_job(job, jobs, args):
    if is_done(job, args):
        print(f"{job.id}: done already")
        return 0
    missing = [dep for dep in job.after if not is_done(jobs[dep], args)]
    if missing:
        raise TinymaeError(f"{job.id} needs {', '.join(missing)} first, which is not done")
    argv = command(job, args)
    try:  # the commit of this checkout, "-dirty" when its files differ from it (--exclude: never a tag's name)
        commit = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=7", "--exclude=*"],
                                capture_output=True, text=True, cwd=os.path.dirname(os.path.abspath(__file__))).stdout
    except OSError:
        commit = ""
    os.makedirs(os.path.join(args.out, job.folder), exist_ok=True)
    record_provenance(os.path.join(args.out, job.provenance), commit.strip())
    sys.stdout.flush()
    os.execv(argv[0], argv)  # this process becomes the job's command: its signals, its end, its exit status


def record_provenance(path, commit):
    """What runs a job (the tinymae version, the commit, the machine, the date), written as it starts. A job resumed
    by other code, or on another machine, keeps what ran it before: "a + b"."""
    try:
        with open(path) as f:
            before = json.load(f)
    except (OSError, ValueError):
        before = {}
    now = {"tinymae": __version__, "commit": commit, "machine": f"{platform.machine()}, {os.cpu_count()} cores"}
    ran = {k: " + ".join(dict.fromkeys([*filter(None, before.get(k, "").split(" + ")), v])) for k, v in now.items()}
    write_atomically(path, lambda f: f.write(json.dumps({**ran, "date": time.strftime("%Y-%m-%d")}).encode()))


def check_reuse(jobs, args):
    """Decode the photos once (the jobs then read the cache), and refuse a finished job trained on other photos or
    with other settings: its numbers would be silently wrong. -> the photos' fingerprint."""
    model = {k: v for k, v in model_flags(args.model).items() if k in MODEL_CONFIGS["vit"].__dataclass_fields__}
    check(MODEL_CONFIGS["vit"](**model))  # an impossible --model is one line, before any photo is decoded
    decoded = decode(find_photos(args.data, args.per_class), 54, progress=True)
    photos = fingerprint(decoded.paths, decoded.labels, decoded.hashes)
    fewest = min(int((decoded.labels == c).sum() * 0.8) for c in range(max(1, len(decoded.classes))))
    if args.labels[0] > fewest:
        raise TinymaeError(f"--labels {args.labels[0]} asks for more labelled photos than a training split has "
                           f"(about {fewest} of each class); choose fewer")
    for job in [job for job in jobs if is_done(job, args)]:
        with open(os.path.join(args.out, job.done)) as f:
            done = json.load(f)
        was = (done.get("data") or {}).get("fingerprint") or done.get("pretraining_fingerprint")
        if job.kind != "torch" and was != photos:
            raise TinymaeError(f"{os.path.join(args.out, job.folder)} was trained on other photos (fingerprint "
                               f"{was}; --data {args.data} has {photos}): choose another --out, or delete it")
        recorded = {**done.get("config", {}), **done.get("settings", {})}
        different = [k for k, v in job.settings.items() if k in recorded and recorded[k] != v]
        if job.kind in ("pretrain", "finetune") and different:
            raise TinymaeError(f"{os.path.join(args.out, job.folder)} was run with other settings "
                               f"({', '.join(different)}): choose another --out, or delete it")
    return photos


def run_local(todo, jobs, args):
    """Ready jobs as subprocesses (--run-job), args.jobs at a time, each pinned to its share of the cores, with
    progress, one retry, and the failures named at the end."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(cpu_count()))
    slots = core_slots(cores, args.jobs)
    logs = os.path.join(args.out, "logs")
    os.makedirs(logs, exist_ok=True)
    waiting, running, failed, tries, took, shown = list(todo), {}, {}, {}, [], None
    try:
        while waiting or running:
            for job in list(waiting):
                if any(dep in failed for dep in job.after):
                    waiting.remove(job)
                    failed[job.id] = "a job it needs failed"
                elif len(running) < args.jobs and all(is_done(jobs[d], args) for d in job.after):
                    waiting.remove(job)
                    slot = next(s for s in slots if all(s is not r[2] for r in running.values()))
                    tries[job.id] = tries.get(job.id, 0) + 1
                    log = os.path.join(logs, job.id.replace("/", "_") + ".log")
                    env = {**os.environ, **{v: str(len(slot)) for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                                        "MKL_NUM_THREADS")}}
                    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--run-job", job.id,
                                             *arguments(args)], stdout=open(log, "a"), stderr=subprocess.STDOUT,
                                            env=env, preexec_fn=lambda s=slot: pinned(s))
                    running[job.id] = (job, proc, slot, time.time(), log)
            for jid, (job, proc, slot, start, log) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[jid]
                if proc.returncode == 0 and is_done(job, args):
                    took.append(time.time() - start)
                elif tries[jid] < 2:
                    print(f"{jid} failed (exit status {proc.returncode}; {log}): retrying it once", flush=True)
                    waiting.insert(0, job)
                else:
                    failed[jid] = log
            left = len(waiting) + len(running)
            line = (f"[{len(todo) - left - len(failed)} done, {len(running)} running, {len(waiting)} left, "
                    f"{len(failed)} failed" + (f"; about {left * sum(took) / len(took) / args.jobs / 60:.0f} min left"
                                                if took else "") + "]")
            if line != shown:
                print(f"{time.strftime('%H:%M:%S')} {line} " + ", ".join(running), flush=True)
                shown = line
            time.sleep(0.2 if running else 0)
    finally:
        for job, proc, *_ in running.values():  # Ctrl-C or an error: the jobs stop too (they resume next time)
            proc.send_signal(signal.SIGINT)
            proc.wait()
    return failed


def core_slots(cores, n):
    """The cores of each of n jobs at a time: an equal share, or one each, shared, when there are more jobs."""
    per = max(1, len(cores) // n)
    return [cores[i * per:(i + 1) * per] if per * n <= len(cores) else [cores[i % len(cores)]] for i in range(n)]


def pinned(cores):
    """In a job's process, before it starts: its cores, and its end with the driver's (however the driver ends)."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def sweep(args):
    jobs = {job.id: job for job in plan(args)}
    if args.list_jobs:
        for job in jobs.values():
            print(json.dumps({"id": job.id, "kind": job.kind, "part": job.part, "folder": job.folder,
                              "done": job.done, "after": list(job.after)}))
        return 0
    if args.run_job:
        if args.run_job not in jobs:
            raise TinymaeError(f"no job {args.run_job!r} in the plan of these arguments (--list-jobs lists them)")
        return run_job(jobs[args.run_job], jobs, args)
    with RunLock(args.out):  # one driver per --out (it makes the folder); each job locks its own folder too
        photos = check_reuse(jobs.values(), args)
        todo = [job for job in jobs.values() if not is_done(job, args)]
        failed = {}
        if todo and not args.report_only:
            print(f"{len(jobs)} jobs, {len(todo)} to run, {args.jobs if args.engine == 'local' else 'on Slurm'} at a "
                  "time", flush=True)
            if args.engine == "slurm":
                from slurm import run_slurm
                failed = run_slurm(todo, jobs, args, arguments(args))
            else:
                failed = run_local(todo, jobs, args)
        if not args.no_report:
            from report import write_report
            write_report(list(jobs.values()), args, photos)
    if failed:
        raise TinymaeError(f"{len(failed)} jobs failed: " + "; ".join(f"{j} ({why})" for j, why in failed.items())
                           + ". Run the same command again: finished jobs are kept, the failed ones rerun")
    return 0


def main(argv=None):
    args = parse_args(argv)
    return cli.run(sweep, args)


if __name__ == "__main__":
    sys.exit(main())
