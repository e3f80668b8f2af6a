#!/usr/bin/python3
"""Plots a run's metrics.jsonl: loss.png (train loss per step, eval loss points) and
throughput.png (tokens/s, and MFU when recorded).

usage: scripts/plot_metrics.py RUN_DIR_or_metrics.jsonl [--out DIR]

Needs Debian's python3-matplotlib (hence /usr/bin/python3). Bad input (missing, empty or
malformed file) ends with one "plot_metrics: error: ..." line naming the file and line, exit 2.
"""
import argparse
import importlib.util
import json
import math
import os
import sys

PROG = "plot_metrics"


class InputError(Exception):
    pass


def fail(message, code=2):
    print(f"{PROG}: error: {message}", file=sys.stderr)
    sys.exit(code)


def number(value):
    """A JSON number as float; null (how non-finite values are written) as NaN; else None."""
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def load(path):
    """Returns (train, evals): train rows [(step, loss, tokens_per_s, mfu)], evals [(step, loss)]."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            lines = f.readlines()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file")
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory without metrics.jsonl")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}")
    train, evals = [], []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            record = json.loads(line.rstrip("\r\n"))
        except json.JSONDecodeError as e:
            if lineno == len(lines) and not line.endswith("\n"):
                # A run still writing (or killed mid-line): the last line is incomplete.
                print(f"{PROG}: warning: {where}: incomplete last line skipped", file=sys.stderr)
                continue
            raise InputError(f"{where}: malformed JSON ({e.msg} at column {e.colno})")
        if not isinstance(record, dict):
            raise InputError(f"{where}: expected a JSON object, got {type(record).__name__}")
        step = record.get("step")
        if isinstance(step, bool) or not isinstance(step, int):
            raise InputError(f"{where}: missing or non-integer 'step'")
        fields = {}
        for key in ("loss", "tokens_per_s", "mfu", "eval_loss"):
            if key in record:
                fields[key] = number(record[key])
                if fields[key] is None:
                    raise InputError(f"{where}: '{key}' is not a number")
        if "loss" in fields:
            train.append((step, fields["loss"], fields.get("tokens_per_s", math.nan),
                          fields.get("mfu")))
        if "eval_loss" in fields:
            evals.append((step, fields["eval_loss"]))
    if not train and not evals:
        raise InputError(f"{path}: no metrics records (empty file)")
    return train, evals


def plot(train, evals, out_dir, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loss_png = os.path.join(out_dir, "loss.png")
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    marker = "." if len(train) <= 50 else None  # short runs: points visible between gaps (NaN)
    if train:
        ax.plot([r[0] for r in train], [r[1] for r in train], label="train loss", linewidth=1.2,
                marker=marker)
    if evals:
        ax.plot([e[0] for e in evals], [e[1] for e in evals], "o", color="tab:red",
                label="eval loss", markersize=5)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"{title}: loss")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(loss_png)
    plt.close(fig)

    throughput_png = os.path.join(out_dir, "throughput.png")
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    steps = [r[0] for r in train]
    marker = "." if len(train) <= 50 else None
    ax.plot(steps, [r[2] for r in train], color="tab:blue", label="tokens/s", linewidth=1.2,
            marker=marker)
    ax.set_xlabel("step")
    ax.set_ylabel("tokens/s")
    ax.set_title(f"{title}: throughput")
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    with_mfu = [(r[0], 100.0 * r[3]) for r in train if r[3] is not None]
    if with_mfu:
        ax2 = ax.twinx()
        ax2.plot([m[0] for m in with_mfu], [m[1] for m in with_mfu], color="tab:orange",
                 label="MFU", linewidth=1.2, linestyle="--", marker=marker)
        ax2.set_ylabel("MFU (%)")
        more_handles, more_labels = ax2.get_legend_handles_labels()
        handles += more_handles
        labels += more_labels
    if not train:
        ax.text(0.5, 0.5, "no training steps recorded", transform=ax.transAxes, ha="center")
    if handles:
        ax.legend(handles, labels, loc="lower right")
    fig.tight_layout()
    fig.savefig(throughput_png)
    plt.close(fig)
    return loss_png, throughput_png


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog=PROG, description="Plot loss.png and throughput.png from a run's metrics.jsonl.")
    parser.add_argument("run", metavar="RUN_DIR_or_metrics.jsonl",
                        help="a run directory (its metrics.jsonl) or a metrics.jsonl file")
    parser.add_argument("--out", metavar="DIR",
                        help="where to write the PNGs (default: beside metrics.jsonl)")
    args = parser.parse_args(argv)

    path = args.run
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.jsonl")
    try:
        train, evals = load(path)
    except InputError as e:
        fail(str(e))
    out_dir = args.out or os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        fail(f"{out_dir}: cannot create output directory: {e.strerror or e}")
    if importlib.util.find_spec("matplotlib") is None:
        fail("matplotlib is not installed (apt-get install python3-matplotlib)", code=1)
    title = os.path.basename(os.path.dirname(os.path.abspath(path))) or "run"
    try:
        written = plot(train, evals, out_dir, title)
    except OSError as e:
        fail(f"{out_dir}: cannot write plots: {e.strerror or e}")
    for png in written:
        print(png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
