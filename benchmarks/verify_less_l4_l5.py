"""Verification L4 (on-target selection) and L5 (length bias of raw inner products), as
docs/methods.md#verification-less defines them.

Pool: 3 tasks × 600 (digit addition, string reversal, random-token distractors) with task-dependent completion
lengths; targets: 2 subtasks × 4 held-out addition examples (3- and 5-digit operands). Tiny random-init Llama +
LoRA, warmup on 5%, 2 checkpoints, d = 512, top 5%. Prints, per method (LESS, its paper aggregation, InfSGD,
RDS, random), the precision (share of addition rows in the selection); for LESS vs random the held-out addition
loss after fully fine-tuning a fresh tiny model on each selection; the median completion length of cosine vs
raw-inner-product selections (Adam and SGD features); and the within-task Spearman correlation of gradient norm
with completion length. Prints numbers only; nothing is asserted.

    .venv/bin/python benchmarks/verify_less_l4_l5.py [--seeds 0 1 2] [--add-digits 1 8]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from skillweave.trainers import less_features as lf
from skillweave.trainers.less import (
    LessConfig,
    load_base,
    prepare,
    run,
    subtask_count,
    top_fraction,
)
from skillweave.trainers.less_baselines import random_selection, rds_scores

FILLER = ["the", "cat", "sat", "on", "mat", "red", "blue", "sky", "tree", "road", "stone", "river"]


def make_row(task: str, rng: random.Random, digits: tuple[int, int] = (1, 5)) -> dict:
    if task == "add":
        # Operands of 1-5 digits in the pool, so completion lengths vary within the task too (L5 needs that).
        a, b = (rng.randint(10 ** (k - 1), 10**k - 1) for k in (rng.randint(*digits), rng.randint(*digits)))
        return {"prompt": f"add {' '.join(str(a))} plus {' '.join(str(b))}", "completion": " ".join(str(a + b)),
                "task": task}
    if task == "rev":
        letters = [rng.choice("abcdefghijklmnop") for _ in range(rng.randint(4, 16))]
        return {"prompt": "reverse " + " ".join(letters), "completion": " ".join(reversed(letters)), "task": task}
    vocab = FILLER + list("abcdefghijklmnop") + [str(d) for d in range(10)]
    return {"prompt": "echo " + " ".join(rng.choice(vocab) for _ in range(rng.randint(2, 8))),
            "completion": " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 30))), "task": task}


def make_data(seed: int, per_task: int = 600, add_digits: tuple[int, int] = (1, 5)
              ) -> tuple[list[dict], list[dict], list[dict]]:
    rng = random.Random(seed)
    pool = [make_row(task, rng, add_digits) for task in ("add", "rev", "noise") for _ in range(per_task)]
    rng.shuffle(pool)
    for i, row in enumerate(pool):
        row["item_id"] = f"row-{i}"
    # Targets: 3-digit and 5-digit additions (two subtasks), longer than the pool's typical addition, so a
    # selection that follows gradient norms rather than direction shows up as a shift to shorter rows (L5).
    targets = [{**make_row("add", rng, (k, k)), "subtask": f"{k}-digit"} for k in (3, 5) for _ in range(4)]
    test = [make_row("add", rng, add_digits) for _ in range(100)]
    return pool, targets, test


def completion_length(row: dict) -> int:
    return len(row["completion"].split())


def finetune_loss(rows: list[dict], test: list[dict], all_texts: list[str], out: Path, seed: int) -> float:
    """Fully fine-tune a fresh tiny model on `rows`; return the mean token loss on held-out addition rows.

    Full fine-tuning, not LoRA: a random-init model's frozen final norm and head cap how far a LoRA can move
    its output distribution, which would hide the difference between selections.
    """
    from transformers import PrinterCallback, Trainer, TrainingArguments

    model, tokenizer = load_base("tiny", all_texts, seed)
    encode = lambda r: lf.encode_example(tokenizer, lf.to_messages(r), 128)  # noqa: E731
    args = TrainingArguments(output_dir=str(out), num_train_epochs=8, per_device_train_batch_size=8,
                             learning_rate=1e-3, lr_scheduler_type="linear", warmup_steps=0.03, weight_decay=0.0,
                             save_strategy="no", report_to="none", use_cpu=True, seed=seed, logging_strategy="no",
                             disable_tqdm=True, remove_unused_columns=False)
    trainer = Trainer(model=model, args=args, train_dataset=[encode(r) for r in rows],
                      data_collator=lambda b: lf.pad_batch(b, tokenizer.pad_token_id))
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    model.eval()
    with torch.no_grad():
        batch = lf.pad_batch([encode(r) for r in test], tokenizer.pad_token_id)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return lf.per_example_loss(logits, batch["labels"]).mean().item()


def norm_length_correlation(features: torch.Tensor, pool: list[dict], task: str) -> float:
    from scipy.stats import spearmanr

    idx = [i for i, r in enumerate(pool) if r["task"] == task]
    norms = features.norm(dim=1)
    return float(spearmanr([norms[i].item() for i in idx], [completion_length(pool[i]) for i in idx])[0])


def one_seed(seed: int, tmp: Path, add_digits: tuple[int, int] = (1, 5)) -> dict:
    pool, targets, test = make_data(seed, add_digits=add_digits)
    folder = tmp / f"seed{seed}"
    folder.mkdir()
    for name, rows in (("pool", pool), ("targets", targets)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = LessConfig(pool=str(folder / "pool.jsonl"), targets=str(folder / "targets.jsonl"), model="tiny",
                        out=str(folder / "grads"), warmup_fraction=0.05, warmup_seed=seed, epochs=2,
                        learning_rate=1e-3, lora_r=8, lora_alpha=32, max_length=128, dim=512, fraction=0.05,
                        feature_batch_size=32, seed=seed)
    is_add = [r["task"] == "add" for r in pool]
    precision = lambda sel: sum(is_add[i] for i in sel) / len(sel)  # noqa: E731
    result: dict = {"seed": seed, "n_pool": len(pool)}
    start = time.perf_counter()
    less = run(config)
    result["less_seconds"] = round(time.perf_counter() - start, 1)
    runs = {
        "less": less,
        "less_paper_aggregation": run(replace(config, aggregation="paper")),
        "less_inner_product": run(replace(config, similarity="inner")),  # same datastore
        "infsgd": run(replace(config, train_side="sgd")),
        "infsgd_inner_product": run(replace(config, train_side="sgd", similarity="inner")),
    }
    selections = {name: r["selected"] for name, r in runs.items()}
    selections["random"] = random_selection(len(pool), config.fraction, seed)
    p = prepare(config)
    selections["rds"] = top_fraction(rds_scores(p["model"], p["pool_enc"], p["target_enc"],
                                                p["tokenizer"].pad_token_id, subtask_count(targets)), config.fraction)
    for name, selected in selections.items():
        result[f"precision_{name}"] = round(precision(selected), 3)
    texts = [m["content"] for r in pool + targets + test for m in lf.to_messages(r)]
    for name in ("less", "random"):
        rows = [pool[i] for i in selections[name]]
        result[f"addition_loss_after_{name}"] = round(finetune_loss(rows, test, texts, folder / f"ft-{name}", seed), 4)
    for name in ("less", "less_inner_product", "infsgd", "infsgd_inner_product"):
        result[f"median_len_{name}"] = statistics.median(completion_length(pool[i]) for i in selections[name])
    for name in ("less", "less_inner_product", "infsgd", "infsgd_inner_product"):
        result[f"mean_len_{name}"] = round(statistics.mean(completion_length(pool[i]) for i in selections[name]), 2)
    # A finer length-bias measure than the selection medians: rank correlation of score and completion length
    # over all addition rows (negative = shorter rows score higher).
    from scipy.stats import spearmanr

    adds = [i for i, r in enumerate(pool) if r["task"] == "add"]
    for name in ("less", "less_inner_product", "infsgd", "infsgd_inner_product"):
        scores = runs[name]["scores"]
        result[f"spearman_score_len_{name}"] = round(float(spearmanr(
            [scores[i].item() for i in adds], [completion_length(pool[i]) for i in adds])[0]), 3)
    result["median_len_pool_addition"] = statistics.median(completion_length(r) for r in pool if r["task"] == "add")
    for side in ("adam", "sgd"):
        raw = torch.load(Path(config.out) / f"pool-ckpt1-{side}" / f"dim{config.dim}" / "all_unormalized.pt")
        for task in ("add", "noise"):
            result[f"spearman_norm_len_{side}_{task}"] = round(norm_length_correlation(raw, pool, task), 3)
        # How much feature norms vary across the pool (std / mean). Where they barely vary, dividing by the norm
        # (cosine) changes no ranking and the inner-product selection equals the cosine one.
        norms = raw.norm(dim=1)
        result[f"norm_cv_{side}"] = round((norms.std() / norms.mean()).item(), 3)
    for side, name in (("adam", "less"), ("sgd", "infsgd")):  # overlap of the cosine and inner-product selections
        a, b = set(selections[name]), set(selections[f"{name}_inner_product"])
        result[f"jaccard_cos_inner_{side}"] = round(len(a & b) / len(a | b), 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads; 1 is fastest on a loaded CPU")
    parser.add_argument("--add-digits", type=int, nargs=2, default=[1, 5], metavar=("LO", "HI"),
                        help="operand digits of the pool's additions (wider = more length spread within the task)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        results = [one_seed(seed, Path(tmp), tuple(args.add_digits)) for seed in args.seeds]
    for r in results:
        print(json.dumps(r))
    keys = [k for k in results[0] if k.startswith(("precision", "addition", "median", "mean_len", "spearman", "norm_cv",
                                                   "jaccard"))]
    print("\nmetric                                " + "  ".join(f"seed {r['seed']:>3}" for r in results))
    for k in keys:
        print(f"{k:38s}" + "  ".join(f"{r[k]:>8}" for r in results))
    l4 = all(r["precision_less"] >= 0.8 and r["addition_loss_after_less"] < r["addition_loss_after_random"]
             for r in results)
    print(f"\nL4 (LESS precision >= 0.8 and lower addition loss than random, every seed): {'pass' if l4 else 'FAIL'}")
    for side in ("less", "infsgd"):
        l5 = all(r[f"median_len_{side}_inner_product"] < r[f"median_len_{side}"] for r in results)
        print(f"L5 {side} features (inner-product selection's median completion length below the cosine "
              f"selection's, every seed; the L5 criterion): {'pass' if l5 else 'FAIL'}")
        finer = all(r[f"mean_len_{side}_inner_product"] < r[f"mean_len_{side}"] for r in results)
        print(f"   finer: inner-product selection's mean completion length below the cosine selection's, every "
              f"seed: {'yes' if finer else 'no'}")


if __name__ == "__main__":
    main()
