"""LESS: select the training examples whose Adam-preconditioned gradients align with a few target examples.

Pipeline (docs/methods.md#less; Xia et al. 2024, princeton-nlp/LESS): LoRA warmup on a random fraction of the pool,
saving per epoch the adapter, the Adam moments keyed by parameter name and the epoch-mean learning rate →
per-example gradient features of every pool row (Adam direction Γ) and every target (plain gradient) at each
checkpoint, projected with one seeded Rademacher matrix and L2-normalised → score = Σ_i w_i cos, mean within
a target subtask, max across subtasks → keep the global top fraction.

Design choices
- One `LessConfig` settings model (`less_config.py`; pydantic, descriptions and ranges, the CLI is generated from it) and
  `run(config)`.
  Defaults follow the reference code where it is cheap, CPU-sized where it is not (LoRA r 8, not 128; effective
  batch 4, not 128); the reference values are in docs/less.md.
- Warmup uses transformers' `Trainer` with a callback that saves `{param_name: (exp_avg, exp_avg_sq, step)}`
  per epoch (index-keyed `optimizer.pt` breaks lookup upstream) and the mean of the LRs actually applied.
- Datastore: `<out>/<name>-ckpt<K>-<adam|adam-paper|sgd>/dim<d>/grads-<n>.pt` chunks (row i = pool row i), resumed from
  the highest chunk, merged into `all_unormalized.pt` and `all_orig.pt` (normalised, fp16); each is indexed in the
  store table `less_datastores`. `format.json` records the layout: format 2 stores chunks in fp16 as the reference
  does (a chunk that fp16 would distort by more than `FP16_ROW_TOLERANCE` of a row's norm stays fp32); folders
  without it are format 1 (fp32 chunks, written before formats existed) and are resumed in fp32. Warmup
  checkpoints are reused when present.
- Variants behind flags: `adam_variant` code|paper (ε placement, bias correction), `aggregation` code|paper
  (mean of per-example cosines vs cosine with the subtask-mean gradient), `train_side` adam|sgd (InfSGD
  baseline), `similarity` cosine|inner (raw inner products, for the length-bias check L5).
- Selections (LESS and the random / RDS baselines in `less_baselines.py`) are saved by
  `selection.save_selection` as a run with one item per selected row plus provenance rows.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import random
import warnings
from pathlib import Path
from typing import Any

import torch

from skillweave.errors import ConfigError, UsageError
from skillweave.trainers import less_features as lf
from skillweave.trainers.less_config import LessConfig


# ---- data ---------------------------------------------------------------------------------------------
def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file or a JSON list (e.g. `skillweave export --format json`), via trainers.data."""
    from skillweave.trainers.data import read_records

    rows = read_records(path)
    if not rows:
        raise UsageError(f"'{path}' holds no rows")
    return rows


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def pool_from_store(store: Any, run_id: str) -> list[dict[str, Any]]:
    """Pool rows from a run exactly as `skillweave export RUN --shape alpaca` writes them: Alpaca
    `instruction`/`input`/`output` plus `item_id`, status `done` items only, reviewer rejections dropped."""
    from skillweave.export import ExportFilters, collect

    examples, dropped, _, seen = collect(store, [run_id], ExportFilters())
    if not examples:
        reasons = "; ".join(f"{n} {r}" for r, n in dropped.items()) or "the run has no items"
        raise UsageError(f"run '{run_id}' gives no training rows ({seen} items seen: {reasons}); export a pool "
                         "as JSONL and pass --pool instead")
    return [{"instruction": e.instruction, "input": e.input, "output": e.output, "item_id": e.item_id}
            for e in examples]


def rows_hash(rows: list[dict[str, Any]]) -> str:
    return hashlib.blake2b(json.dumps(rows, sort_keys=True).encode(), digest_size=8).hexdigest()


def subtask_count(rows: list[dict[str, Any]]) -> int:
    """Number of target subtasks; `subtask` groups must be contiguous and equal-sized (docs/methods.md#less-formulas)."""
    labels = [str(r.get("subtask", "")) for r in rows]
    groups: list[list[str]] = []
    for label in labels:
        if groups and groups[-1][0] == label:
            groups[-1].append(label)
        else:
            groups.append([label])
    names = [g[0] for g in groups]
    if len(set(names)) != len(names):
        raise UsageError(f"target subtasks must be contiguous; '{next(n for n in names if names.count(n) > 1)}' "
                         "appears in separate runs of rows: sort the targets file by subtask")
    sizes = {len(g) for g in groups}
    if len(sizes) != 1:
        raise UsageError(f"target subtasks must be equal-sized; sizes are "
                         f"{ {g[0]: len(g) for g in groups} }: give each subtask the same number of examples")
    return len(groups)


# ---- model ----------------------------------------------------------------------------------------------
def load_base(spec: str, texts: list[str], seed: int = 0, device=None, dtype=None):
    """(model, tokenizer) for a spec; 'tiny' builds a word-level model over the words of `texts`.

    `device`/`dtype` are torch objects or `--device`/`--dtype` values (default fp32 on the CPU).
    """
    from skillweave.trainers.devices import resolve_device, resolve_dtype
    from skillweave.trainers.models import load_model_and_tokenizer, tiny_model_and_tokenizer

    target = device if isinstance(device, torch.device) else resolve_device(device or "cpu")
    dtype = dtype if isinstance(dtype, torch.dtype) else resolve_dtype(dtype or "fp32", target)
    if spec == "tiny":
        words = sorted({w for t in texts for w in t.split()})
        model, tokenizer = tiny_model_and_tokenizer(words, seed=seed, max_position_embeddings=512)
        return model.to(device=target, dtype=dtype), tokenizer
    return load_model_and_tokenizer(spec, device=target, dtype=dtype)


def add_lora(model, config: LessConfig):
    from peft import LoraConfig, get_peft_model

    targets = [t.strip() for t in config.lora_targets.split(",") if t.strip()]
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=targets, bias="none", task_type="CAUSAL_LM")
    try:
        with warnings.catch_warnings():  # peft calls a transformers property deprecated in v5; not actionable here
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            return get_peft_model(model, lora)
    except ValueError as exc:
        raise ConfigError(f"cannot add LoRA to modules {targets}: {exc}") from None


# ---- warmup ---------------------------------------------------------------------------------------------
def warmup_subset(n_pool: int, fraction: float, seed: int) -> list[int]:
    k = max(1, int(fraction * n_pool))
    return sorted(random.Random(seed).sample(range(n_pool), k))


def _collate(pad_id: int):
    return lambda examples: lf.pad_batch(examples, pad_id)


def warmup(model, tokenizer, encoded: list[dict], config: LessConfig, out: Path) -> list[Path]:
    """LoRA-train on the warmup subset; returns one checkpoint folder per epoch (reused if already complete)."""
    folders = [out / "warmup" / f"ckpt{epoch}" for epoch in range(1, config.epochs + 1)]
    key = warmup_key(config, encoded, model)
    if all((f / "meta.json").exists() for f in folders):
        found = {json.loads((f / "meta.json").read_text()).get("warmup_key") for f in folders}
        if found != {key}:
            raise ConfigError(f"{out / 'warmup'} holds checkpoints from different warmup settings or data; "
                              "pass another --out or delete that folder")
        return folders
    if any(p.requires_grad and p.dtype == torch.float16 for p in model.parameters()):
        raise ConfigError("--dtype fp16: the LESS warmup would train its LoRA adapters in pure fp16, where AdamW's "
                          "eps (1e-8) is 0 and the first step divides 0 by 0; warm up with --dtype bf16 or fp32")
    from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

    names = [n for n, _ in lf.trainable_parameters(model)]

    class EpochSaver(TrainerCallback):
        def __init__(self) -> None:
            self.lrs: list[float] = []
            self.epoch = 0

        def on_step_begin(self, args, state, control, lr_scheduler=None, **kwargs):
            self.lrs.append(float(lr_scheduler.get_last_lr()[0]))  # the LR this optimizer step applies

        def on_epoch_end(self, args, state, control, model=None, optimizer=None, **kwargs):
            from skillweave.trainers.devices import is_main_process, wait_for_everyone

            folder = folders[self.epoch]
            self.epoch += 1
            if is_main_process():  # under DDP every process holds the same adapter and moments
                save_checkpoint(getattr(model, "module", model), getattr(optimizer, "optimizer", optimizer), names,
                                folder, epoch=self.epoch, step=state.global_step, lrs=self.lrs, key=key)
            wait_for_everyone()
            self.lrs = []

    from skillweave.trainers.devices import model_device, process_info, warmup_steps

    subset = [encoded[i] for i in warmup_subset(len(encoded), config.warmup_fraction, config.warmup_seed)]
    device = model_device(model)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # Trainer places the model on the current CUDA device
    args = TrainingArguments(
        output_dir=str(out / "warmup" / "trainer"), num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size, gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate, lr_scheduler_type="linear",
        warmup_steps=warmup_steps(config.warmup_ratio, examples=len(subset), batch_size=config.batch_size,
                                  grad_accum=config.grad_accum, epochs=config.epochs, world=process_info()[1]),
        weight_decay=0.0, optim="adamw_torch", adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8,
        save_strategy="no", report_to="none", use_cpu=device.type == "cpu", seed=config.warmup_seed,
        data_seed=config.warmup_seed,
        logging_strategy="no", disable_tqdm=True, remove_unused_columns=False, dataloader_num_workers=0,
    )
    model.train()
    trainer = Trainer(model=model, args=args, train_dataset=subset, data_collator=_collate(tokenizer.pad_token_id),
                      callbacks=[EpochSaver()])
    trainer.remove_callback(PrinterCallback)  # keep stdout clean for --json
    trainer.train()
    model.eval()
    return folders


def warmup_key(config: LessConfig, encoded: list[dict], model: Any = None) -> str:
    """A hash of everything that determines the warmup checkpoints.

    With `model`, the precision and the device kind it trains in are part of the key (the resolved ones, so
    `--dtype auto` on a GPU and `--dtype bf16` share a warmup, and a bf16 warmup is never reused by an fp32
    run). fp32 on the CPU adds nothing, so warmups made before either option existed keep their key.
    """
    fields = ("model", "warmup_fraction", "warmup_seed", "epochs", "learning_rate", "warmup_ratio", "batch_size",
              "grad_accum", "lora_r", "lora_alpha", "lora_dropout", "lora_targets", "max_length", "seed")
    settings = {f: getattr(config, f) for f in fields}
    if model is not None:
        param = next(model.parameters())
        dtype, kind = str(param.dtype).removeprefix("torch."), param.device.type
        if (dtype, kind) != ("float32", "cpu"):
            settings.update(dtype=dtype, device=kind)  # results differ between precisions and device kinds
    return rows_hash([settings, encoded])


def save_checkpoint(model, optimizer, names: list[str], folder: Path, *, epoch: int, step: int,
                    lrs: list[float], key: str = "") -> None:
    """Adapter weights, Adam moments keyed by parameter name, and the epoch-mean learning rate."""
    folder.mkdir(parents=True, exist_ok=True)
    by_param = dict(model.named_parameters())
    weights = {n: by_param[n].detach().cpu().clone() for n in names}  # saved on the CPU, loaded to the device
    state = {}
    for n in names:
        s = optimizer.state.get(by_param[n], {})
        if "exp_avg" in s:
            state[n] = {"exp_avg": s["exp_avg"].cpu().clone(), "exp_avg_sq": s["exp_avg_sq"].cpu().clone(),
                        "step": int(float(s["step"]))}
    group = optimizer.param_groups[0]
    torch.save(weights, folder / "lora.pt")
    torch.save(state, folder / "adam.pt")
    meta = {"epoch": epoch, "step": step, "mean_lr": sum(lrs) / max(len(lrs), 1), "n_steps": len(lrs),
            "beta1": group["betas"][0], "beta2": group["betas"][1], "eps": group["eps"], "warmup_key": key}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))


def load_checkpoint(model, folder: Path) -> tuple[dict, lf.AdamMoments | None]:
    """Load the adapter weights into `model`; return the checkpoint meta and its Adam moments."""
    from skillweave.trainers.devices import model_device

    meta = json.loads((folder / "meta.json").read_text())
    device = model_device(model)
    weights = torch.load(folder / "lora.pt", map_location=device)
    with torch.no_grad():
        params = dict(model.named_parameters())
        for name, value in weights.items():
            params[name].copy_(value)
    state = torch.load(folder / "adam.pt", map_location=device)  # the moments live on the model's device
    names = [n for n, _ in lf.trainable_parameters(model)]
    moments = None
    if state:
        moments = lf.AdamMoments.from_named(state, names, beta1=meta["beta1"], beta2=meta["beta2"], eps=meta["eps"])
    return meta, moments


# ---- datastore ------------------------------------------------------------------------------------------
DATASTORE_FORMAT = 2  # 1: fp32 chunks (no format.json); 2: fp16 chunks, fp32 where fp16 would distort a row
FORMAT_FILE = "format.json"
FP16_ROW_TOLERANCE = 1e-3  # most fp16 rounding error of a stored row, relative to its norm (typically ~2e-4)


def datastore_dir(out: Path, name: str, checkpoint: int, kind: str, dim: int) -> Path:
    return out / f"{name}-ckpt{checkpoint}-{kind}" / f"dim{dim}"


def datastore_format(folder: Path) -> int:
    """The layout of a datastore folder: its `format.json`, else 1 when it already holds features (written
    before formats existed), else the current format for a new folder."""
    path = folder / FORMAT_FILE
    if path.exists():
        found = json.loads(path.read_text()).get("format")
        if found not in (1, DATASTORE_FORMAT):
            raise ConfigError(f"datastore {folder} has format {found!r}, which this skillweave does not know "
                              "(written by a newer release?); pass another --out")
        return found
    if (folder / "all_unormalized.pt").exists() or any(folder.glob("grads-*.pt")):
        return 1
    return DATASTORE_FORMAT


def chunk_to_store(projected: torch.Tensor, fmt: int) -> torch.Tensor:
    """A finished chunk (on the CPU) as it is saved: format 1 keeps fp32; format 2 stores fp16, as the reference
    does, unless some row would move by more than FP16_ROW_TOLERANCE of its norm (a value beyond fp16's range,
    or rows so small that fp16's subnormals lose digits): then the chunk stays fp32."""
    projected = projected.float()
    if fmt == 1:
        return projected
    half = projected.half()
    error = (half.float() - projected).norm(dim=1) / projected.norm(dim=1).clamp(min=1e-30)
    return half if bool((error <= FP16_ROW_TOLERANCE).all()) else projected


def build_features(model, pad_id: int, encoded: list[dict], folder: Path, *, kind: str,
                   moments: lf.AdamMoments | None, projector: lf.RademacherProjector | lf.TrakProjector,
                   config: LessConfig, adam_variant: str = "code", checkpoint_key: str = "",
                   progress=None) -> torch.Tensor:
    """Projected features of every example (row i = example i), written in resumable chunks; returns raw (N, d)
    as float32, exactly as stored (a fresh build and a reload give the same values)."""
    final = folder / "all_unormalized.pt"
    folder.mkdir(parents=True, exist_ok=True)
    identity = {"rows": rows_hash(encoded), "projector_seed": projector.seed, "dim": projector.dim_out,
                "checkpoint": checkpoint_key}
    if projector.identity:  # other signs; numpy datastores keep their earlier identity
        identity["projector"] = projector.identity
    meta_path = folder / "meta.json"
    if meta_path.exists() and json.loads(meta_path.read_text()) != identity:
        raise ConfigError(f"datastore {folder} was built from other data, checkpoint or projector; pass another "
                          "--out or delete it")
    from skillweave.trainers.devices import is_main_process, process_info, shard, wait_for_everyone

    rank, world = process_info()
    fmt = datastore_format(folder)  # a folder keeps the format it was started in
    if is_main_process():
        meta_path.write_text(json.dumps(identity))
        (folder / FORMAT_FILE).write_text(json.dumps(
            {"format": fmt, "chunks": "float32" if fmt == 1 else "float16 (float32 where fp16 would move a row by "
                                                                 f"more than {FP16_ROW_TOLERANCE} of its norm)"}))
    if final.exists():
        raw = torch.load(final)
        if raw.shape == (len(encoded), projector.dim_out):
            return raw.float()
    done = sorted(int(p.stem.split("-")[1]) for p in folder.glob("grads-*.pt"))
    start = done[-1] if done else 0
    model.eval()
    with contextlib.ExitStack() as stack:
        if config.gradient_method == "batched":
            batched = stack.enter_context(lf.BatchedGradients(model))
            gradients = lambda examples: batched(examples, pad_id)  # noqa: E731
        else:
            gradients = lambda examples: lf.example_gradients(model, examples, pad_id, config.gradient_method)  # noqa: E731
        device = projector.device
        for chunk_start in range(start, len(encoded), config.chunk_examples):
            chunk = encoded[chunk_start : chunk_start + config.chunk_examples]
            # Batch examples of similar length (less padding); batches are projected into the chunk's (rows, d)
            # accumulator in pool order through a buffer bounded in bytes, so no (chunk, P) gradient matrix is held.
            projected = torch.zeros(len(chunk), projector.dim_out, dtype=torch.float32, device=device)
            buffer = lf.ProjectionBuffer(projector, projected, budget=(config.projection_buffer_mb << 20) or None)
            done_rows = 0
            # Under several processes each takes its share of the batches; the accumulators are summed.
            batches = lf.length_batches([len(e["input_ids"]) for e in chunk], config.feature_batch_size,
                                        config.feature_batch_tokens)
            for index in shard(batches, rank, world):
                grads = gradients([chunk[i] for i in index])
                if kind.startswith("adam"):
                    grads = lf.adam_features(grads, moments, adam_variant, inplace=True)  # fresh rows
                buffer.add(index, grads)
                done_rows += len(index)
                if progress and world == 1:
                    progress(chunk_start + done_rows, len(encoded), folder.parent.name)
            buffer.flush()
            if world > 1:
                from accelerate.utils import reduce

                projected = reduce(projected, reduction="sum")
            if is_main_process():  # to the CPU to save
                torch.save(chunk_to_store(projected.cpu(), fmt), folder / f"grads-{chunk_start + len(chunk)}.pt")
    wait_for_everyone()  # every chunk file is written before any process reads them back
    chunks = sorted(folder.glob("grads-*.pt"), key=lambda p: int(p.stem.split("-")[1]))
    stored = [torch.load(p) for p in chunks]
    raw = torch.cat([c.float() for c in stored])
    if raw.shape[0] != len(encoded):
        raise ConfigError(f"datastore {folder} holds {raw.shape[0]} rows for {len(encoded)} examples; delete it "
                          "and rerun (the pool changed)")
    if is_main_process():  # fp16 when every chunk is (the reference's merged file), else fp32
        torch.save(raw.half() if all(c.dtype == torch.float16 for c in stored) else raw, final)
        torch.save(lf.normalize_rows(raw).half(), folder / "all_orig.pt")
    wait_for_everyone()
    return raw


def index_datastore(store: Any, folder: Path, *, status: str, **row: Any) -> None:
    """Record (or update) a feature folder in the store's `less_datastores` index."""
    if store is None:
        return
    from skillweave.store import now, stable_id

    key = stable_id(str(folder.resolve()))
    with store.lock:
        existing = list(store.db["less_datastores"].rows_where("id = ?", [key]))
        created = existing[0]["created_at"] if existing else now()
        store.db["less_datastores"].upsert(
            {"id": key, "path": str(folder), "status": status, "created_at": created, "updated_at": now(), **row},
            pk="id")


# ---- scoring ---------------------------------------------------------------------------------------------
def checkpoint_weights(mean_lrs: list[float]) -> list[float]:
    total = sum(mean_lrs)
    if total <= 0:
        return [1 / len(mean_lrs)] * len(mean_lrs)
    return [lr / total for lr in mean_lrs]


def less_scores(train: list[torch.Tensor], targets: list[torch.Tensor], weights: list[float], n_subtasks: int,
                *, aggregation: str = "code", similarity: str = "cosine") -> torch.Tensor:
    """s(z) = max over subtasks of the LR-weighted sum over checkpoints of the similarity to the subtask.

    `train[i]` (N, d) and `targets[i]` (M, d) are raw projected features at checkpoint i.
    """
    n, m = train[0].shape[0], targets[0].shape[0]
    if m % n_subtasks:
        raise UsageError(f"{m} target rows do not split into {n_subtasks} equal subtasks")
    per = m // n_subtasks
    scores = torch.zeros(n, n_subtasks, dtype=torch.float64)
    for w, g_train, g_val in zip(weights, train, targets, strict=True):
        g_train, g_val = g_train.double(), g_val.double()
        if similarity == "cosine":
            g_train = lf.normalize_rows(g_train)
        if aggregation == "paper":
            val = g_val.reshape(n_subtasks, per, -1).mean(1)
            val = lf.normalize_rows(val) if similarity == "cosine" else val
            scores += w * (g_train @ val.T)
        else:
            val = lf.normalize_rows(g_val) if similarity == "cosine" else g_val
            scores += w * (g_train @ val.T).reshape(n, n_subtasks, per).mean(-1)
    return scores.max(dim=1).values


def top_fraction(scores: torch.Tensor, fraction: float) -> list[int]:
    """Row indices of the global top int(fraction·N) scores (at least one), best first, ties by index."""
    k = max(1, int(fraction * len(scores)))
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    return order[:k]


# ---- pipeline ---------------------------------------------------------------------------------------------
def prepare(config: LessConfig, store: Any = None) -> dict[str, Any]:
    """Rows, names, folders, model and encodings shared by LESS and the baselines."""
    if config.pool_run:
        if store is None:
            raise ConfigError("reading the pool from a run needs a store")
        pool = pool_from_store(store, config.pool_run)
        name = config.name or config.pool_run
    else:
        pool = read_jsonl(config.pool)
        name = config.name or Path(config.pool).stem
    targets = read_jsonl(config.targets) if config.targets else []
    out = Path(config.out or Path("grads") / name)
    out.mkdir(parents=True, exist_ok=True)
    from skillweave.trainers.devices import is_main_process

    if config.pool_run and is_main_process():
        write_jsonl(out / "pool.jsonl", pool)  # the row order the datastore indexes
    pool_msgs = [lf.to_messages(r) for r in pool]
    target_msgs = [lf.to_messages(r) for r in targets]
    texts = [m["content"] for msgs in pool_msgs + target_msgs for m in msgs]
    from skillweave.trainers.devices import setup

    device, dtype = setup(config.device, config.dtype)
    model, tokenizer = load_base(config.model, texts, config.seed, device=device, dtype=dtype)
    return {"pool": pool, "targets": targets, "name": name, "out": out, "model": model, "tokenizer": tokenizer,
            "pool_enc": [lf.encode_example(tokenizer, m, config.max_length) for m in pool_msgs],
            "target_enc": [lf.encode_example(tokenizer, m, config.max_length) for m in target_msgs],
            "pool_hash": rows_hash(pool)}


def make_projector(model, config: LessConfig) -> lf.RademacherProjector | lf.TrakProjector:
    """The run's one projector, on the model's device, shared by every chunk, checkpoint and side (pool, targets).

    numpy/device: a Π that fits the projector's cache budget (P × d × 4 bytes ≤ 256 MiB) is generated once, on its
    first use, and kept on the device; a larger one is streamed block by block on every projection (docs/less.md).
    trak: TRAK's projector with the reference's arguments and the model's dtype (as `next(model.parameters())`).
    """
    from skillweave.trainers.devices import model_device

    n_params = sum(x.numel() for _, x in lf.trainable_parameters(model))
    if config.projector == "trak":
        return lf.TrakProjector(n_params, config.dim, config.projector_seed, device=model_device(model),
                                dtype=next(model.parameters()).dtype)
    return lf.RademacherProjector(n_params, config.dim, config.projector_seed, device=model_device(model),
                                  generator=config.projector)


def run(config: LessConfig, store: Any = None, progress=None) -> dict[str, Any]:
    """Warmup → features → scores → selection; returns a summary with the selection id (if a store is given)."""
    from skillweave.trainers.selection import save_selection

    config.validate()
    if config.projector == "trak":
        lf.require_trak()  # before any warmup
    p = prepare(config, store)
    n_subtasks = subtask_count(p["targets"])
    model = add_lora(p["model"], config)
    folders = warmup(model, p["tokenizer"], p["pool_enc"], config, p["out"])
    projector = make_projector(model, config)
    pad_id = p["tokenizer"].pad_token_id
    train_feats, target_feats, mean_lrs, checkpoints = [], [], [], []
    for folder in folders:
        meta, moments = load_checkpoint(model, folder)
        k = meta["epoch"]
        if config.train_side == "adam" and moments is None:
            raise ConfigError(f"checkpoint {folder} has no Adam state (did the warmup take any step?)")
        mean_lrs.append(meta["mean_lr"])
        checkpoints.append(k)
        kind = "sgd" if config.train_side == "sgd" else "adam" if config.adam_variant == "code" else "adam-paper"
        pool_dir = datastore_dir(p["out"], p["name"], k, kind, config.dim)
        target_dir = datastore_dir(p["out"], "targets-" + rows_hash(p["targets"]), k, "sgd", config.dim)
        common = {"checkpoint": k, "dim": config.dim, "seed": config.projector_seed, "model": config.model}
        pool_row = {"pool": p["name"], "pool_hash": p["pool_hash"], "kind": kind, "n_rows": len(p["pool"]), **common}
        target_row = {"pool": "targets", "pool_hash": rows_hash(p["targets"]), "kind": "sgd",
                      "n_rows": len(p["targets"]), **common}
        index_datastore(store, pool_dir, status="partial", **pool_row)  # visible while its chunks are written
        train_feats.append(build_features(model, pad_id, p["pool_enc"], pool_dir, kind=kind, moments=moments,
                                          projector=projector, config=config, adam_variant=config.adam_variant,
                                          checkpoint_key=meta["warmup_key"], progress=progress))
        index_datastore(store, pool_dir, status="complete", **pool_row)
        target_feats.append(build_features(model, pad_id, p["target_enc"], target_dir, kind="sgd", moments=None,
                                           projector=projector, config=config, checkpoint_key=meta["warmup_key"]))
        index_datastore(store, target_dir, status="complete", **target_row)
    weights = checkpoint_weights(mean_lrs)
    scores = less_scores(train_feats, target_feats, weights, n_subtasks, aggregation=config.aggregation,
                         similarity=config.similarity)
    selected = top_fraction(scores, config.fraction)
    method = "less" if config.train_side == "adam" else "infsgd"
    provenance = {"config": config.model_dump(), "checkpoints": checkpoints, "mean_lrs": mean_lrs, "weights": weights,
                  "n_subtasks": n_subtasks, "targets": [r.get("item_id") or i for i, r in enumerate(p["targets"])],
                  "targets_hash": rows_hash(p["targets"]), "pool_hash": p["pool_hash"],
                  "n_params": projector.dim_in}
    from skillweave.trainers.devices import is_main_process

    if not is_main_process():  # under several processes one writes the selection
        return {"scores": scores, "selected": selected, "weights": weights, "checkpoints": checkpoints}
    result = save_selection(store, method, p["pool"], selected, scores, provenance, out=p["out"], name=p["name"],
                            fraction=config.fraction, source_run=config.pool_run or None, pool_path=config.pool)
    return {**result, "scores": scores, "selected": selected, "weights": weights, "checkpoints": checkpoints}


def mean_pool_length(encoded: list[dict], rows: list[int]) -> float:
    """Mean number of response tokens over the given rows (for length-bias reports)."""
    counts = [sum(1 for x in encoded[i]["labels"] if x != lf.IGNORE) for i in rows]
    return sum(counts) / max(len(counts), 1) if counts else math.nan
