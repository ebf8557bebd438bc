"""The numbers on docs/results.md and the one rule every comparison there uses."""
import math
import statistics

import numpy as np

RULE = ("Every ± is the sample standard deviation over seeds (n − 1 in the denominator). A difference between "
        "two rows counts when it is larger than twice its standard error, 2·√(s₁²/n₁ + s₂²/n₂); a row measured "
        "with one seed borrows the standard deviation of the row it is compared with. *Within the spread* "
        "means the difference is smaller than that.")


def present(values):
    return [v for v in values if v is not None]


def not_run_yet(values, seeds):
    """'seeds 1 and 2 not run yet' (or 'seed 2 ...') for the seeds whose value is missing; '' when none is.
    values: one per seed, in the order of `seeds`."""
    missing = [str(s) for s, v in zip(seeds, values) if v is None]
    if not missing:
        return ""
    listed = f"{', '.join(missing[:-1])} and {missing[-1]}" if len(missing) > 1 else missing[0]
    return f"seed{'s' * (len(missing) > 1)} {listed} not run yet"


def pct(values, show_n=False):
    """'58.7 ± 1.2' in percent over seeds (sample std), '58.7' for one value, '—' for none."""
    values = present(values)
    if not values:
        return "—"
    n = f" ({len(values)})" if show_n else ""
    if len(values) == 1:
        return f"{100 * values[0]:.1f}{n}"
    return f"{100 * np.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}{n}"


def compare(values, base):
    """The difference of two rows in points, read by the page's one rule -> (text, verdict) where verdict is
    +1 (higher beyond the spread), -1 (lower beyond it), 0 (within it), None (no spread to read it against)
    or "missing" (a row has not run yet)."""
    a, b = present(values), present(base)
    if not a or not b:
        return "—", "missing"
    diff = 100 * (np.mean(a) - np.mean(b))
    sa = statistics.stdev(a) if len(a) > 1 else None
    sb = statistics.stdev(b) if len(b) > 1 else None
    if sa is None and sb is None:
        return f"{diff:+.1f} (one seed each)", None
    sa, sb = (sb if sa is None else sa), (sa if sb is None else sb)
    se = 100 * math.sqrt(sa ** 2 / len(a) + sb ** 2 / len(b))
    verdict = 0 if abs(diff) <= 2 * se else (1 if diff > 0 else -1)
    return f"{diff:+.1f} ± {se:.1f}", verdict


def reading(verdict, expected):
    """A verdict against the direction the paper found (expected: +1 or -1)."""
    if verdict == "missing":
        return "not run yet"
    if verdict is None:
        return "not resolved (no seed spread)"
    if verdict == 0:
        return "within the spread"
    return "as the paper" if verdict == expected else "the opposite of the paper"


