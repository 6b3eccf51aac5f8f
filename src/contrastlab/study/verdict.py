"""The report's first screen: the leaderboard (the best configuration of each family of representations, per
dataset and probe protocol), the sentences that say what it means, and the glossary under them.

Every sentence is a template filled from the rows of results.csv (`rows`) and comparisons.csv, never from
numbers computed on the side, so it cannot disagree with them (tests/study/test_verdict.py checks that).
"""

from __future__ import annotations

from contrastlab.study.results import FAMILIES, Group, group_name, without_axes
from contrastlab.study.stats import ALPHA, POWER, fmt_diff, fmt_p

PROTOCOLS = ("study", "standard")
VERSUS_CLASSICAL = (
    "verdict: label-free contrastive vs classical"  # + ", <dataset>": that test's family in comparisons.csv
)


def leaders(groups: list[Group]) -> list[Group]:
    """The best group (highest mean top-1) of each family per dataset and probe protocol among those with two or
    more seeds, and after it the best single run where one scores higher (never ranked: its row says 1 seed), in
    the order dataset, family (FAMILIES), protocol."""
    best: dict[tuple, Group] = {}
    for g in groups:
        key = (g.dataset, g.family, g.param("probe.protocol"), len(g.runs) < 2)
        if key not in best or g.mean("top1") > best[key].mean("top1"):
            best[key] = g
    shown = [
        key
        for key in best
        if not key[3]
        or (key[:3] + (False,) not in best)
        or best[key].mean("top1") > best[key[:3] + (False,)].mean("top1")
    ]
    datasets = list(dict.fromkeys(g.dataset for g in groups))
    return [
        best[key]
        for key in sorted(
            shown, key=lambda k: (datasets.index(k[0]), FAMILIES.index(k[1]), PROTOCOLS.index(k[2]), k[3])
        )
    ]


BUDGETS = (30, 60, 120)  # training CPU-minutes: the budgets the label-free methods are compared within


def within_budgets(groups: list[Group], budgets: tuple[int, ...] = BUDGETS) -> list[dict]:
    """Per dataset, probe protocol and budget: the label-free contrastive group with the best mean top-1 among those
    whose training took at most that many CPU-minutes, as a leaderboard row plus its `budget` (none: no such run)."""
    label_free = [g for g in groups if g.family == FAMILIES[0]]
    rows = []
    for dataset, protocol in dict.fromkeys((g.dataset, g.param("probe.protocol")) for g in label_free):
        here = [g for g in label_free if (g.dataset, g.param("probe.protocol")) == (dataset, protocol)]
        for budget in budgets:
            fitting = [g for g in here if g.cpu_minutes <= budget]
            if fitting:
                rows.append({**leaderboard_row(max(fitting, key=lambda g: g.mean("top1"))), "budget": budget})
    return rows


UNCONVERGED = "‡"  # marks a top-1 whose probe stopped at probe.max_iter in some seed (the glossary says so)


def fmt_top1(row: dict) -> str:
    """A leaderboard row's top-1 with its 95% CI, or marked as one seed's; `UNCONVERGED` where a probe stopped early."""
    return (
        f"{row['top1_mean']:.4f}"
        + (f" ± {row['top1_ci95']:.4f}" if row["top1_ci95"] != "" else " (1 seed)")
        + (f" {UNCONVERGED}" if row["unconverged_seeds"] else "")
    )


def budget_table(rows: list[dict]) -> list[str]:
    """`within_budgets`' rows as Markdown."""
    lines = [
        "| dataset | protocol | training budget (CPU-min) | best label-free configuration | seeds | "
        "training CPU-min | top-1 (95% CI) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        top1 = fmt_top1(r)
        lines.append(
            f"| {r['dataset']} | {r['protocol']} | {r['budget']} | {r['configuration']} | {r['seeds']} | "
            f"{r['cpu_minutes']:.1f} | {top1} |"
        )
    return lines


def configuration(group: Group) -> str:
    """What the group is, in words: the method, encoder, features, training length and recipe, and the settings its
    grid changed beyond those (a baseline: its label and the encoder it ran on)."""
    if group.is_baseline:
        if group.family in (FAMILIES[3], FAMILIES[4]):
            return group.label
        others = without_axes(group.variant, "arch", "features", "protocol").replace("-", " ")
        return "; ".join(
            part
            for part in (group.label, f"{group.param('model.arch')} encoder", group.param("probe.features"), others)
            if part
        )
    others = without_axes(group.variant, "arch", "features", "epochs", "protocol")
    epochs = group.runs[0].get("train", {}).get("epochs")
    parts = [
        f"{group.setting('loss')} / {group.setting('aug')}",
        f"{group.param('model.arch')} encoder",
        group.param("probe.features"),
        f"{epochs} epochs" if epochs else "",
        f"{group.recipe} recipe",
        others.replace("-", " "),
    ]
    return "; ".join(part for part in parts if part)


def leaderboard_row(group: Group) -> dict:
    """One row of the leaderboard as results.csv stores it."""
    half = group.ci("top1")
    return {
        "dataset": group.dataset,
        "family": group.family,
        "configuration": configuration(group),
        "group": group_name(group.runs[0]["study"]),
        "seeds": len(group.runs),
        "labels_used": "yes" if group.labels_used else "no",
        "width": group.width,
        "protocol": group.param("probe.protocol"),
        "cpu_minutes": round(group.cpu_minutes, 1),
        "top1_mean": round(group.mean("top1"), 4),
        "top1_ci95": "" if half is None else round(half, 4),
        "unconverged_seeds": group.unconverged,
    }


def leaderboard_table(rows: list[dict]) -> list[str]:
    """The leaderboard as Markdown."""
    lines = [
        "| dataset | family | best configuration | seeds | labels used | width | protocol | training CPU-min "
        "| top-1 (95% CI) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        top1 = fmt_top1(r)
        lines.append(
            f"| {r['dataset']} | {r['family']} | {r['configuration']} | {r['seeds']} | {r['labels_used']} | "
            f"{r['width']} | {r['protocol']} | {r['cpu_minutes']:.1f} | {top1} |"
        )
    return lines


def fmt_row(row: dict) -> str:
    """ "<method>, <encoder> (<top-1> ± <ci>)" of a leaderboard row: the first two parts of its configuration,
    enough to find the row in the leaderboard above the sentences."""
    ci = f" ± {row['top1_ci95']:.4f}" if row["top1_ci95"] != "" else ", 1 seed"
    mark = f" {UNCONVERGED}" if row["unconverged_seeds"] else ""
    return f"{', '.join(row['configuration'].split('; ')[:2])} ({row['top1_mean']:.4f}{ci}{mark})"


def fmt_comparison(row: dict) -> str:
    """A comparisons.csv row as the report prints a test: difference, 95% CI, p (and Holm's), the test."""
    if row["p"] == "":
        return f"{fmt_diff(row['diff'])} ({row['test']})"
    holm = "" if row["p_holm"] == "" else f", Holm p {fmt_p(row['p_holm'])}"
    return (
        f"{fmt_diff(row['diff'])} [{fmt_diff(row['ci_low'])}, {fmt_diff(row['ci_high'])}], p {fmt_p(row['p'])}{holm} "
        f"({row['test']})"
    )


def sentences(rows: list[dict], comparisons: list[dict]) -> list[str]:
    """Three to five sentences from the leaderboard rows of results.csv and comparisons.csv: per dataset the best
    of each family on one probe protocol (the one the label-free contrastive and classical groups were tested on,
    family `VERSUS_CLASSICAL`, else the first the dataset has), that test, and triplet against pairwise in the
    study's scenarios (the findings' family) over all datasets."""
    said = []
    for dataset in dict.fromkeys(row["dataset"] for row in rows):
        here = [row for row in rows if row["dataset"] == dataset]
        test = next((c for c in comparisons if c["family"] == f"{VERSUS_CLASSICAL}, {dataset}"), None)
        tested = {row["group"]: row for row in here if test and row["group"] in (test["a_group"], test["b_group"])}
        protocol = tested[test["a_group"]]["protocol"] if test else here[0]["protocol"]
        families: dict[str, dict] = {}
        for row in here:
            if row["protocol"] == protocol:
                families.setdefault(row["family"], row)  # a group of several seeds comes before a single run
        free, using, ceiling, classical = (families.get(FAMILIES[i]) for i in range(4))
        if test:
            free, classical = tested[test["a_group"]], tested[test["b_group"]]
        if free and ceiling:
            said.append(
                f"On {dataset} ({protocol} probe), the best label-free contrastive representation is "
                f"{fmt_row(free)}; with labels, contrastive training reaches "
                f"{fmt_row(using) if using else 'nothing on this probe yet'} and the supervised ceiling is "
                f"{fmt_row(ceiling)}."
            )
        if test:
            assert free is not None and classical is not None  # both rows of `tested` (above)
            outcome = (
                ("beats it" if test["diff"] > 0 else "falls short of it")
                if test["finding"] == "yes"
                else "is not told apart from it"
            )
            said.append(
                f"Against the best classical label-free baseline on {dataset}, {fmt_row(classical)} in "
                f"{classical['cpu_minutes']:.1f} CPU-minutes, the best label-free contrastive method (trained "
                f"{free['cpu_minutes']:.1f} CPU-minutes) {outcome}: {fmt_comparison(test)}."
            )
        elif free and not classical:
            said.append(f"No classical label-free baseline has run on {dataset} yet.")
    counts: list[str] = []
    for dataset in dict.fromkeys(row["dataset"] for row in rows):
        losses = [
            c
            for c in comparisons
            if c["family"] == f"findings, {dataset}"  # the same augmentation only
            and c["a"].startswith("triplet / ")
            and c["b"] == "pairwise / " + c["a"].removeprefix("triplet / ")
        ]
        if losses:
            counts.append(
                f"{sum(c['diff'] > 0 for c in losses)} of {len(losses)}{'' if counts else ' augmentations'} "
                f"on {dataset}, significantly under {sum(c['finding'] == 'yes' and c['diff'] > 0 for c in losses)}"
            )
    if counts:
        said.append(
            f"In the study's scenarios, the triplet loss scores above the pairwise loss under "
            f"{' and '.join(counts)} (Holm, {ALPHA:.0%})."
        )
    return said


GLOSSARY = [
    "- **protocol**: `study` fits the linear probe on 80% of the test images' features and scores the other 20% "
    "(the reference study's split); `standard` fits it on every training image's features and scores every test "
    "image (the literature's linear evaluation).",
    "- **recipe**: how an encoder is trained (optimizer, learning rate and schedule, head, epochs): "
    "`study.recipes` in params.yaml; `protocol` is the study's own.",
    "- **backbone / embedding**: the probe reads the encoder's 256 features before the projection, or the "
    "embedding the loss sees; **width** is how many features the probe reads.",
    "- **labels used**: whether training saw labels (SupCon, negatives chosen by label, the supervised baselines).",
    "- **training CPU-min**: wall time of training x the machine's threads (baselines: the whole run, fitting "
    "and probing included); raw pixels train nothing.",
    "- **the tests**: ± is the half-width of the 95% confidence interval of the mean over seeds (t-based). A "
    "difference is tested by a paired t-test over the seeds two groups share (same seed: same examples, split "
    "and initialisation), Welch's t-test where they share fewer than two; the p-values of one table or list "
    f"of findings are corrected together by Holm's method, and a **finding** is a difference with corrected p < "
    f"{ALPHA}. A single run is never ranked: it says `1 seed`. Where a tested difference is no finding, the report "
    f"says how many seeds per group would detect one of its size with {POWER:.0%} chance at Holm's strictest level "
    f"({ALPHA} / the family's number of tests), from the spread measured.",
    f"- **{UNCONVERGED}**: in at least one seed the linear probe stopped at `probe.max_iter` steps before its "
    "solver converged (the widest features, e.g. 6,400 of them fitted on 50,000 images); its top-1 is what the "
    "solver reached by then, most likely a little below the converged probe's (results.csv: `unconverged_seeds`).",
    "- The best configuration of a family is chosen on the test split among the runs made, so its number is "
    "optimistic by how many configurations were tried (the held-out selection in the appendix avoids that).",
]
