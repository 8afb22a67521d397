"""docs/results.md from scratch: every number in it is produced by this script today.

    make results          # = python -m dmmlkd.benchmarks.results --out docs/results.md

Setting (issue 8's, 20 rounds instead of 30 for time): mfeat, 8 devices on a ring, Dirichlet
label skew alpha = 0.5, 20 rounds,
local_iters 5, the battery of uniform tau (every method gets the same energy). Settings are
tuned on the validation split of fac+zer with tuning seeds (100..); everything reported is on
the test split with seeds 0..4, on fac+zer and on held-out view pairs. Raw tables go to
runs/results/ (finals.csv, paired.csv).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from dmmlkd.learner.config import TrainConfig
from dmmlkd.studies.compare import default_jobs, paired_differences, run_configs
from dmmlkd.userio import to_markdown

# 20 rounds, not the 30: the whole study must fit ~20 min on a shared 2-core machine.
SETTING = dict(dataset="mfeat", devices=8, alpha=0.5, rounds=20, local_iters=5)
TUNE_PAIR = ["fac", "zer"]
REPORT_PAIRS = [["fac", "zer"], ["kar", "zer"], ["pix", "mor"], ["fou", "zer"]]  # --pairs
CORE = ["dmml-kd", "dmml-kd-balance", "random-schedule", "modality-dropout"]
EXTRA = ["ogm-ge", "dmml-kd-balance-dropout"]  # on the tuning pair only
SIGNALS = ["variation", "confidence"]
DROPOUT_RATES = [0.3, 0.5]


Spec = tuple[str, TrainConfig, list[str], list[int]]  # (tag, base config, methods, seeds)


def runs(specs: list[Spec], jobs: int, log: list[pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Final metrics of every spec's methods x seeds, all in one process pool (tagged, and
    kept in ``log`` for finals.csv), with each view's mean tau per run."""
    configs = [replace(base, method=m, seed=s).validate()
               for _, base, methods, seeds in specs for s in seeds for m in methods]
    tags = [tag for tag, _, methods, seeds in specs for _ in seeds for _ in methods]
    _, rows, finals = run_configs(configs, jobs, progress=False)
    tau = rows[rows["tau"] > 0].groupby(["run", "modality"])["tau"].mean()
    views = sorted({v for c in configs for v in c.views or []})
    for v in views:
        finals[f"tau_{v}"] = [tau.get((i, v), np.nan) for i in range(len(configs))]
    finals = finals.assign(setting=tags, views=["+".join(c.views or []) for c in configs])
    out = {}
    start = 0
    for tag, _, methods, seeds in specs:
        n = len(methods) * len(seeds)
        out[tag] = finals.iloc[start:start + n].dropna(axis=1, how="all").copy()
        start += n
    log.extend(out.values())
    return out


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def mean_sd(group: pd.Series) -> str:
    return f"{100 * group.mean():.1f} ± {100 * group.std(ddof=0):.1f}"


def delta(paired: pd.DataFrame, method: str, metric: str) -> str:
    r = paired[(paired["method"] == method) & (paired["metric"] == metric)]
    if r.empty:
        return ""
    r = r.iloc[0]
    return f"{100 * r.mean_diff:+.1f} [{100 * r.ci_low:+.1f}, {100 * r.ci_high:+.1f}]"


def summary_table(finals: pd.DataFrame, views: list[str]) -> pd.DataFrame:
    """Mean ± sd over seeds (accuracies in %), energy as a share of the battery."""
    out = []
    for method, g in finals.groupby("method", sort=False):
        row = {"method": method, "seeds": len(g)}
        for v in views:
            row[f"{v} alone"] = mean_sd(g[f"acc_{v}"])
            row[f"tau {v}"] = f"{g[f'tau_{v}'].mean():.2f}"
        row["consensus"] = mean_sd(g["consensus_accuracy"])
        row["device"] = mean_sd(g["accuracy"])
        row["energy / battery"] = f"{(g['energy_used_j'] / g['battery_total_j']).mean():.4f}"
        row["executed / charged"] = \
            f"{(g['executed_energy_j'] / g['energy_used_j']).max():.6f}"
        out.append(row)
    return pd.DataFrame(out)


def paired_rows(finals: pd.DataFrame, reference: str, views: list[str],
                methods: list[str] | None = None) -> pd.DataFrame:
    """Paired deltas (points, 95% CI) of every method against ``reference``."""
    paired = paired_differences(finals, reference)
    weak = min(views, key=lambda v: finals[f"acc_{v}"].mean())
    strong = max(views, key=lambda v: finals[f"acc_{v}"].mean())
    out = []
    for method in methods or [m for m in finals["method"].unique() if m != reference]:
        out.append({"method": f"{method} − {reference}",
                    f"weak view ({weak})": delta(paired, method, f"acc_{weak}"),
                    f"strong view ({strong})": delta(paired, method, f"acc_{strong}"),
                    "consensus": delta(paired, method, "consensus_accuracy"),
                    "device": delta(paired, method, "accuracy")})
    return pd.DataFrame(out)


def verdict(finals: pd.DataFrame, views: list[str]) -> tuple[str, str]:
    """Does the allocator beat the best allocator-free control on the weak view, consensus
    within 0.5 points? Returns (sentence, best method by mean weak-view accuracy)."""
    weak = min(views, key=lambda v: finals[f"acc_{v}"].mean())
    means = finals.groupby("method")[[f"acc_{weak}", "consensus_accuracy"]].mean()
    controls = [m for m in ("random-schedule", "modality-dropout") if m in means.index]
    best_control = max(controls, key=lambda m: means.loc[m, f"acc_{weak}"])
    paired = paired_differences(finals, best_control)
    r = paired[(paired["method"] == "dmml-kd-balance") & (paired["metric"] == f"acc_{weak}")].iloc[0]
    c = paired[(paired["method"] == "dmml-kd-balance")
               & (paired["metric"] == "consensus_accuracy")].iloc[0]
    if r.ci_low > 0 and c.mean_diff >= -0.005:
        word = "beats"
    elif r.ci_high < 0:
        word = "loses to"
    else:
        word = "is not distinguishable from"
    cons_ok = "within" if c.mean_diff >= -0.005 else "NOT within"
    sentence = (f"dmml-kd-balance {word} the best allocator-free control ({best_control}) on "
                f"{weak}: {100 * r.mean_diff:+.1f} points [95% CI {100 * r.ci_low:+.1f}, "
                f"{100 * r.ci_high:+.1f}], consensus {100 * c.mean_diff:+.1f} points ({cons_ok} "
                f"0.5 points).")
    fair = means[means["consensus_accuracy"] >= means["consensus_accuracy"].max() - 0.005]
    best = str(fair[f"acc_{weak}"].idxmax())
    return sentence, best


def choose(done: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, str, float]:
    """The tuning table and the choices: signal and dropout rate with the best mean validation
    weak-view accuracy (fac+zer, tuning seeds)."""
    sig = pd.concat([done[f"signal={x}"].assign(knob="signal", choice=x) for x in SIGNALS])
    drop = pd.concat([done[f"dropout_rate={r}"].assign(knob="dropout_rate", choice=r)
                      for r in DROPOUT_RATES])
    signal = str(sig.groupby("choice")["val_weakest_view_accuracy"].mean().idxmax())
    rate = float(drop.groupby("choice")["val_weakest_view_accuracy"].mean().idxmax())
    tuning = pd.concat([sig, drop])
    tuning["choice"] = tuning["choice"].astype(str)
    table = tuning.groupby(["knob", "choice"], sort=False).agg(
        val_weak=("val_weakest_view_accuracy", mean_sd),
        val_consensus=("val_consensus_accuracy", mean_sd)).reset_index()
    return table, signal, rate


def overall(per_pair: list[tuple[list[str], pd.DataFrame]], all_rule: pd.DataFrame,
            missing: pd.DataFrame) -> list[str]:
    """The plain verdict and the mechanism, computed from the tables above."""
    lines = []
    weak_gain, strong_gain, wins, losses, ties = [], [], 0, 0, 0
    for pair, finals in per_pair:
        weak = min(pair, key=lambda v: finals[f"acc_{v}"].mean())
        strong = max(pair, key=lambda v: finals[f"acc_{v}"].mean())
        for ref in ("random-schedule", "modality-dropout"):
            p = paired_differences(finals, ref)
            r = p[(p["method"] == "dmml-kd-balance") & (p["metric"] == f"acc_{weak}")].iloc[0]
            wins += int(r.ci_low > 0)
            losses += int(r.ci_high < 0)
            ties += int(r.ci_low <= 0 <= r.ci_high)
        p = paired_differences(finals, "dmml-kd")
        for m in ("dmml-kd-balance", "random-schedule", "modality-dropout"):
            q = p[p["method"] == m].set_index("metric")
            weak_gain.append((m, q.loc[f"acc_{weak}", "mean_diff"]))
            strong_gain.append((m, q.loc[f"acc_{strong}", "mean_diff"]))

    def mean(xs: list[tuple[str, float]], m: str) -> float:
        return 100 * float(np.mean([v for k, v in xs if k == m]))

    weak_all = min(TUNE_PAIR, key=lambda v: all_rule[f"acc_{v}"].mean())
    weak_missing = min(TUNE_PAIR, key=lambda v: missing[f"acc_{v}"].mean())
    pm = paired_differences(missing, "dmml-kd")
    rm = pm[(pm["method"] == "dmml-kd-balance") & (pm["metric"] == f"acc_{weak_missing}")].iloc[0]
    missing_word = ("worse than" if rm.ci_high < 0 else "better than" if rm.ci_low > 0
                    else "not distinguishable from")
    controls_strong = min(mean(strong_gain, "random-schedule"), mean(strong_gain, "modality-dropout"))
    controls_weak = max(mean(weak_gain, "random-schedule"), mean(weak_gain, "modality-dropout"))
    strong_word = "less" if mean(strong_gain, "dmml-kd-balance") < controls_strong else "as much"
    as_much = mean(weak_gain, "dmml-kd-balance") <= controls_weak
    lift_all = delta(paired_differences(all_rule, "dmml-kd"), "dmml-kd-balance", f"acc_{weak_all}")
    lines.append(f"- **Does the allocator earn the lift?** No. Against the two allocator-free "
                 f"controls on the weak view, over {len(per_pair)} view pairs: better in {wins}, "
                 f"not distinguishable in {ties}, worse in {losses} of "
                 f"{wins + ties + losses} paired comparisons (95% CI over the seeds), and it "
                 f"lifts the strong view {strong_word}. With views missing (network scope) it is "
                 f"{missing_word} uniform tau on the weak view: {100 * rm.mean_diff:+.1f} "
                 f"[{100 * rm.ci_low:+.1f}, {100 * rm.ci_high:+.1f}] points (section 5)."
                 if wins == 0 else
                 f"- **Does the allocator earn the lift?** Better than the allocator-free "
                 f"controls in {wins} of {wins + ties + losses} paired comparisons on the weak "
                 f"view, not distinguishable in {ties}, worse in {losses}.")
    lines.append(f"- **The mechanism, as the controls show it.** Mean lift over dmml-kd on the "
                 f"weak view: allocator {mean(weak_gain, 'dmml-kd-balance'):+.1f}, random "
                 f"schedule {mean(weak_gain, 'random-schedule'):+.1f}, modality dropout "
                 f"{mean(weak_gain, 'modality-dropout'):+.1f} points; on the strong view "
                 f"{mean(strong_gain, 'dmml-kd-balance'):+.1f}, "
                 f"{mean(strong_gain, 'random-schedule'):+.1f}, "
                 f"{mean(strong_gain, 'modality-dropout'):+.1f}. "
                 + ("A schedule that measures nothing lifts the weak view as much as the "
                    "allocator or more" if as_much else "The allocator lifts the weak view more "
                    "than the controls") + ": under the `training` "
                 f"fusion rule any unequal tau leaves a view out of the fused prediction in its "
                 f"extra iterations, i.e. it acts as modality dropout, and dropout is what lifts "
                 f"the views. Under the `all` rule (no implicit dropout) the allocator's lift on "
                 f"the weak view is {lift_all} points (section 4).")
    core = pd.concat([f[f["method"].isin(CORE)] for _, f in per_pair])
    scores = core.groupby("method")[["weakest_view_accuracy", "consensus_accuracy"]].mean()
    ok = scores[scores["consensus_accuracy"] >= scores["consensus_accuracy"].max() - 0.005]
    pick = str(ok["weakest_view_accuracy"].idxmax())
    lines.append(f"- **What to pick.** Highest weak-view accuracy averaged over the pairs with "
                 f"consensus within 0.5 points of the best: `{pick}` "
                 f"({100 * ok.loc[pick, 'weakest_view_accuracy']:.1f}% weak view, "
                 f"{100 * ok.loc[pick, 'consensus_accuracy']:.1f}% consensus; all four core "
                 f"methods: " + ", ".join(
                     f"`{m}` {100 * r.weakest_view_accuracy:.1f} / {100 * r.consensus_accuracy:.1f}"
                     for m, r in scores.iterrows()) + "). Modality dropout and the random "
                 "schedule need no allocator and no measurement; `dmml-kd-balance` costs a solve "
                 "per round for no measurable gain here.")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/results.md")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--tune-seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=SETTING["rounds"])
    parser.add_argument("--jobs", type=int, default=default_jobs())
    parser.add_argument("--pairs", type=int, default=3, help="view pairs reported (of 4)")
    parser.add_argument("--from-csv", action="store_true",
                        help="re-render from runs/results/ (finals.csv, meta.json), no training")
    args = parser.parse_args()
    t0 = time.perf_counter()
    seeds = list(range(args.seeds))
    tune_seeds = list(range(100, 100 + args.tune_seeds))
    base = TrainConfig(**{**SETTING, "rounds": args.rounds}).validate()
    pairs = REPORT_PAIRS[:args.pairs]
    raw_dir = Path("runs/results")
    if args.from_csv:  # re-render the tables of an earlier run (same code, no training)
        raw = pd.read_csv(raw_dir / "finals.csv")
        meta = json.loads((raw_dir / "meta.json").read_text())
        base = replace(base, rounds=int(meta["rounds"]))
        done = {str(tag): g.dropna(axis=1, how="all").copy()
                for tag, g in raw.groupby("setting", sort=False)}
        wall, jobs = float(meta["wall_s"]), int(meta["jobs"])
        seeds = sorted(int(x) for x in done["+".join(TUNE_PAIR)]["seed"].unique())
        tune_seeds = sorted(int(x) for x in done[f"signal={SIGNALS[0]}"]["seed"].unique())
        pairs = [p for p in REPORT_PAIRS if "+".join(p) in done]
        log = [raw]
    else:
        log = []
        # 1. Tuning on validation (fac+zer, tuning seeds): the allocator's signal, dropout rate.
        tune = replace(base, views=TUNE_PAIR)
        done = runs([(f"signal={x}", replace(tune, signal=x), ["dmml-kd-balance"], tune_seeds)
                     for x in SIGNALS]
                    + [(f"dropout_rate={r}", replace(tune, dropout_rate=r), ["modality-dropout"],
                        tune_seeds) for r in DROPOUT_RATES], args.jobs, log)
        _, signal, rate = choose(done)
        tuned = replace(base, signal=signal, dropout_rate=rate)
        # 2. The main comparison: every pair, core methods, reporting seeds; extras on fac+zer.
        # 3. The allocator under the "all" fusion rule (every encoder feeds the fusion every
        #    iteration: unequal tau is no longer implicit dropout); random-schedule is refused.
        # 4. Views missing (30% per device, at least one kept), the network scope.
        done.update(runs(
            [("+".join(p), replace(tuned, views=p), CORE + (EXTRA if p == TUNE_PAIR else []),
              seeds) for p in pairs]
            + [("all", replace(tuned, views=TUNE_PAIR, fusion_rule="all"),
                ["dmml-kd", "dmml-kd-balance"], seeds),
               ("missing", replace(tuned, views=TUNE_PAIR, missing_rate=0.3, scope="network"),
                CORE, seeds)], args.jobs, log))
        wall, jobs = time.perf_counter() - t0, args.jobs
        raw_dir.mkdir(parents=True, exist_ok=True)
        pd.concat(log, ignore_index=True).to_csv(raw_dir / "finals.csv", index=False)
        (raw_dir / "meta.json").write_text(json.dumps({"wall_s": wall, "jobs": jobs,
                                                       "rounds": base.rounds}))
    tuning_table, signal, rate = choose(done)
    per_pair = [(p, done["+".join(p)]) for p in pairs]
    all_rule, missing = done["all"], done["missing"]
    n_runs = sum(len(f) for f in log)
    md: list[str] = []

    md.append("# Results\n")
    md.append(f"Generated by `make results` (benchmarks/results.py) in {wall / 60:.1f} min "
              f"({n_runs} runs, {jobs} processes, {wall / max(n_runs, 1) * jobs:.1f} s "
              f"per run, on the shared 2-core machine while other jobs ran). Do not edit by hand: "
              f"rerun it (`--from-csv` re-renders the tables from runs/results/ without "
              f"training).\n")
    md.append(f"Setting: mfeat, {base.devices} devices on a ring, Dirichlet label skew "
              f"alpha = {base.alpha}, {base.rounds} rounds, local_iters {base.local_iters}, "
              f"batch {base.batch_size}, fusion rule `{base.fusion_rule}` unless stated. Every "
              f"method has the same battery: exactly what uniform tau costs over the run. "
              f"Accuracies are in %, mean ± sd over seeds {seeds[0]}..{seeds[-1]} on the test "
              f"split; paired differences are method − reference on the same seed, with a 95% "
              f"Student-t interval over seeds (`paired.csv` of `dmmlkd compare`). `weak view` is "
              f"the view with the lower unimodal accuracy of the consensus model.\n")
    md.append("Methods: `dmml-kd` (uniform tau), `dmml-kd-balance` (the allocator sets tau from "
              "a measured balance signal each round), and the allocator-free controls "
              "`random-schedule` (each device's views get local_iters ± 1 at random, antithetic "
              "in pairs of rounds: exactly uniform's energy) and `modality-dropout` (dmml-kd + "
              "dropping views from the fused prediction while training, uniform tau); `ogm-ge` "
              "and `dmml-kd-balance-dropout` (the allocator on top of dropout) on the tuning "
              "pair. `dpsgd` and the fourth pair (fou+zer, `--pairs 4`) are left out for time.\n")
    md.append("## 1. Tuned on validation (fac+zer, tuning seeds "
              f"{tune_seeds[0]}..{tune_seeds[-1]})\n")
    md.append(to_markdown(tuning_table) + "\n")
    md.append(f"Chosen by the validation weak-view accuracy: signal = `{signal}`, dropout_rate = "
              f"{rate}. Everything below uses them; nothing below was looked at to choose them.\n")
    md.append("## 2. Executed = charged\n")
    ratios = pd.concat(log)
    spent = ratios["energy_used_j"] / ratios["battery_total_j"]
    md.append(f"Over all {n_runs} runs: executed / charged energy in "
              f"[{(ratios['executed_energy_j'] / ratios['energy_used_j']).min():.9f}, "
              f"{(ratios['executed_energy_j'] / ratios['energy_used_j']).max():.9f}]; energy "
              f"spent / battery at most {spent.max():.6f} (dmml-kd spends the whole battery). "
              f"The executed energy is counted from the forward/backward passes local training "
              f"ran (learner/local.py), independently of the charge from tau.\n")
    md.append("## 3. Every method, every pair (test split)\n")
    verdicts = []
    for pair, finals in per_pair:
        name = "+".join(pair) + (" (tuning pair)" if pair == TUNE_PAIR else " (held out)")
        md.append(f"### {name}\n")
        md.append(to_markdown(summary_table(finals, pair)) + "\n")
        md.append("Paired against dmml-kd (points, 95% CI):\n")
        md.append(to_markdown(paired_rows(finals, "dmml-kd", pair)) + "\n")
        md.append("The allocator against the controls:\n")
        md.append(to_markdown(pd.concat([
            paired_rows(finals, ref, pair, ["dmml-kd-balance"])
            for ref in ("random-schedule", "modality-dropout")])) + "\n")
        sentence, best = verdict(finals, pair)
        verdicts.append((name, sentence, best))
        md.append(f"**{sentence}** Best weak-view accuracy with consensus within 0.5 points of "
                  f"the best: `{best}`.\n")
    md.append("## 4. The allocator under the `all` fusion rule (fac+zer)\n")
    md.append("Every held encoder feeds the fused prediction in every iteration, so unequal tau "
              "no longer drops a view from it; only the encoder updates differ. "
              "(random-schedule is refused under this rule: its L_k = local_iters + 1 forward "
              "passes cannot cost uniform's energy.)\n")
    md.append(to_markdown(summary_table(all_rule, TUNE_PAIR)) + "\n")
    md.append(to_markdown(paired_rows(all_rule, "dmml-kd", TUNE_PAIR)) + "\n")
    md.append("## 5. Views missing (rate 0.3), network scope (fac+zer)\n")
    md.append("Devices missing a view train on the one they hold; every method here uses "
              "modality dropout 0.3 automatically (some devices miss a view), so "
              "modality-dropout differs from dmml-kd only by its tuned rate.\n")
    md.append(to_markdown(summary_table(missing, TUNE_PAIR)) + "\n")
    md.append(to_markdown(paired_rows(missing, "dmml-kd", TUNE_PAIR)) + "\n")
    sentence, best = verdict(missing, TUNE_PAIR)
    verdicts.append(("fac+zer, views missing", sentence, best))
    md.append(f"**{sentence}**\n")
    md.append("## 6. Verdict\n")
    md.extend(overall(per_pair, all_rule, missing))
    md.append("\nPer setting:\n")
    for name, sentence, best in verdicts:
        md.append(f"- {name}: {sentence} Pick: `{best}`.")
    md.append("")
    md.append("Time and frequency (DVFS, deadlines) are in [dvfs.md](dvfs.md).\n")
    Path(args.out).write_text("\n".join(md) + "\n", encoding="utf-8")
    print(f"{args.out}: {n_runs} runs in {wall:.0f} s")


if __name__ == "__main__":
    main()
