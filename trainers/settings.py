"""The trainer commands' settings as pydantic models: one model per command, every field with its description,
its range and its default; unknown keys are errors (`extra="forbid"`).

The options of `train sft`, `train dpo`, `ches score`, `topic-model train|head` and `unlearn` are generated from
these models (`cli/options.py`, built lazily by `cli/settings_command.py`), and what a trainer stores (a run's
config, `skillweave_training.json`, a topic model's config) is the model's `model_dump()`. This module imports
pydantic only (no torch, numpy or scipy), so building a command's options stays cheap. LESS's models
(`LessConfig`, `RandomSelectionConfig`) are in `trainers.less_config` and share the base and the device fields
defined here; `trainers.unlearning.topic_model` and `trainers.unlearning.unlearn` re-export theirs.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

DEVICE_HELP = "auto (CUDA when available, else CPU), cpu, cuda or cuda:N."
DTYPE_HELP = "Weights and compute precision; auto: bf16 on a CUDA device that supports it, else fp32."
CHECKPOINTING_HELP = "Recompute activations in the backward pass (less memory, more compute)."
DATA_SHAPES = ("Preference pairs (JSONL/JSON): prompt/chosen/rejected, SORRY-Bench query/chosen/rejected or "
               "AlpacaFarm output_1/output_2/preference.")


def _check_device(value: str) -> str:
    spec = value.strip().lower()
    index = spec.removeprefix("cuda:")
    if spec in ("auto", "cpu", "cuda") or (spec.startswith("cuda:") and index.isdigit()):
        return value
    raise ValueError(f"'{value}' is not one of auto, cpu, cuda, cuda:N")


# The settings every torch trainer shares (devices.setup reads them).
Device = Annotated[str, AfterValidator(_check_device), Field(description=DEVICE_HELP)]
Dtype = Annotated[Literal["auto", "fp32", "bf16", "fp16"], Field(description=DTYPE_HELP)]
Checkpointing = Annotated[bool, Field(description=CHECKPOINTING_HELP)]
Fsdp = Annotated[bool, Field(description="Shard the model, gradients and optimizer state across the processes of "
                                         "an `accelerate launch` (FSDP2, one unit per decoder layer); full "
                                         "fine-tuning only.")]
Store = Annotated[str | None, Field(description="Store file that records the run (None: do not record); the "
                                                "command line sets it from the global --db.")]


class TrainerSettings(BaseModel):
    """Base of every trainer's settings: unknown keys are errors, `model_dump()` is what gets stored."""

    model_config = ConfigDict(extra="forbid")

    # fields the command line does not offer as options (the store comes from the global --db)
    cli_exclude: ClassVar[frozenset[str]] = frozenset({"db"})
    # option declarations that differ from `--field-name` (kept from earlier releases), e.g. "--output"
    cli_flags: ClassVar[dict[str, str]] = {}

    @classmethod
    def from_stored(cls, values: dict[str, Any] | None):
        """Settings as stored by this or an earlier release (`model_dump()` or the dataclass `asdict()` of
        releases before these models): a key that is no longer a field is dropped, every value is validated."""
        return cls.model_validate({k: v for k, v in (values or {}).items() if k in cls.model_fields})


_BOOL_FLAGS = {"gradient_checkpointing": "--gradient-checkpointing/--no-gradient-checkpointing",
               "lora": "--lora/--full", "fsdp": "--fsdp/--no-fsdp"}


class SFTConfig(TrainerSettings):
    """Settings of `skillweave train sft` (PTST: tune with one template, evaluate with another)."""

    cli_flags: ClassVar[dict[str, str]] = {"output_dir": "--output", **_BOOL_FLAGS}

    data: str = Field("", description="JSONL/JSON in an export shape: prompt/completion, messages, or Alpaca "
                                      "instruction/input/output.")
    model: str = Field("local", description="'local' (embedded SmolLM2-135M-Instruct) or a local HF folder.")
    output_dir: str | None = Field(None, description="Checkpoint folder (weights, tokenizer, templates used); "
                                                     "none: do not save.")
    train_template: str = Field("chat:vanilla", description="Template for training data (see `train templates`).")
    eval_template: str = Field("chat:llama", description="Template for evaluation (PTST: with a safety prompt).")
    system_prompts: str | None = Field(None, description="JSON file overriding system-prompt texts.")
    eval_data: str | None = Field(None, description="JSONL to evaluate after training (rows with `answer` are Q/A, "
                                                    "others safety prompts), or an AdvBench-style CSV (one prompt "
                                                    "a row, no header).")
    eval_max_new_tokens: int = Field(64, ge=1, description="Generation length at evaluation.")
    eval_temperature: float = Field(0.0, ge=0, description="Sampling temperature at evaluation (0: greedy).")
    lora: bool = Field(False, description="LoRA adapters (merged on save) or full fine-tuning.")
    lora_r: int = Field(8, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(16, ge=1, description="LoRA alpha (scale alpha / r).")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout.")
    lora_targets: str = Field("all-linear", description="Comma-separated module names or all-linear.")
    lr: float = Field(2e-5, gt=0, description="Peak learning rate.")
    epochs: float = Field(1.0, gt=0, description="Training epochs.")
    max_steps: int = Field(-1, ge=-1, description="Stop after this many optimizer steps (-1: use epochs).")
    batch_size: int = Field(4, ge=1, description="Examples per step (per process).")
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps.")
    max_length: int = Field(1024, ge=1, description="Max tokens per example; the start is kept.")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Fraction of the optimizer steps with a linear "
                                                              "learning-rate warmup.")
    scheduler: Literal["linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
                       "constant_with_warmup", "inverse_sqrt"] = Field("cosine", description="Learning-rate schedule after the warmup "
                                                                 "(transformers' scheduler names).")
    seed: int = Field(0, description="Random seed.")
    db: Store = None
    device: Device = "auto"
    dtype: Dtype = "auto"
    gradient_checkpointing: Checkpointing = False
    fsdp: Fsdp = False


class DPOConfig(TrainerSettings):
    """Settings of `skillweave train dpo` (DPO / IPO / cDPO with an optional CHES~ pre-filter)."""

    cli_flags: ClassVar[dict[str, str]] = {"output_dir": "--output", "loss_type": "--loss", **_BOOL_FLAGS}

    data: str | None = Field(None, description=DATA_SHAPES)
    store_run: str | None = Field(None, description="Read pairs from this run's store items of kind 'preference'.")
    model: str = Field("local", description="'local' (embedded SmolLM2-135M-Instruct) or a local HF folder.")
    output_dir: str | None = Field(None, description="Folder to save the trained policy (none: do not save).")
    template: str = Field("model", description="Prompt template (default: the model's chat template).")
    beta: float = Field(0.1, gt=0, description="DPO beta, the inverse temperature (IPO: tau).")
    loss_type: Literal["sigmoid", "ipo"] = Field("sigmoid", description="Preference loss: sigmoid (DPO) or ipo.")
    label_smoothing: float = Field(0.0, ge=0, le=0.5, description="cDPO label smoothing eps (sigmoid loss).")
    c_sft: float = Field(0.0, ge=0, description="Weight of the SFT term -mean ln pi(chosen).")
    optimizer: Literal["rmsprop", "adamw", "sgd"] = Field("rmsprop", description="Optimizer (rmsprop: the CHES "
                                                                                  "reference setup).")
    lr: float = Field(1e-6, gt=0, description="Learning rate.")
    epochs: int = Field(1, ge=1, description="Passes over the pairs.")
    max_steps: int | None = Field(None, ge=0, description="Stop after this many optimizer steps.")
    batch_size: int = Field(8, ge=1, description="Pairs per optimizer step.")
    micro_batch_size: int | None = Field(None, ge=1, description="Pairs per forward/backward; gradients accumulate "
                                                                 "to one step of --batch-size (less memory).")
    max_length: int = Field(1024, ge=1, description="Max tokens per sequence; the start is kept.")
    ches_keep_lowest: float | None = Field(None, gt=0, le=1, description="Train only on this fraction with the "
                                                                         "lowest CHES~ (e.g. 0.05).")
    ches_batch_size: int = Field(32, ge=1, description="Sequences per forward pass when scoring CHES.")
    lora: bool = Field(False, description="LoRA adapters (reference = the base model; merged on save) or full "
                                          "fine-tuning.")
    lora_r: int = Field(8, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(16, ge=1, description="LoRA alpha (scale alpha / r).")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout.")
    lora_targets: str = Field("all-linear", description="Comma-separated module names or all-linear.")
    seed: int = Field(0, description="Shuffling and tie-breaking seed.")
    eval_data: str | None = Field(None, description="Held-out prompt/chosen/rejected JSONL: change of mean "
                                                    "ln pi(chosen) on it too.")
    eval_prompts: str | None = Field(None, description="JSONL of safety prompts: refusal rate before/after "
                                                       "(keyword judge).")
    eval_max_new_tokens: int = Field(64, ge=1, description="Generation length for --eval-prompts.")
    device: Device = "auto"
    dtype: Dtype = "auto"
    gradient_checkpointing: Checkpointing = False
    db: Store = None
    fsdp: Fsdp = False


class CHESConfig(TrainerSettings):
    """Settings of `skillweave ches score` (and of the DPO trainer's pre-filter)."""

    data: str | None = Field(None, description=DATA_SHAPES)
    store_run: str | None = Field(None, description="Read pairs from this run's store items of kind 'preference'.")
    model: str = Field("local", description="'local' or a local HF folder (the policy to score with).")
    template: str = Field("model", description="Prompt template (default: the model's chat template).")
    batch_size: int = Field(32, ge=1, description="Sequences per forward pass (sorted by length).")
    max_length: int = Field(1024, ge=1, description="Max tokens per sequence; the start is kept.")
    keep_lowest: float | None = Field(None, gt=0, le=1, description="Keep this fraction with the lowest CHES~ "
                                                                    "(e.g. 0.05).")
    output: str | None = Field(None, description="JSONL for the kept rows (with --keep-lowest).")
    db: Store = None
    device: Device = "auto"
    dtype: Dtype = "auto"


class TopicModelConfig(TrainerSettings):
    """Settings of the anchor-word topic-model learner (`trainers.unlearning.topic_model.fit`); stored with every
    model version (`topic_models.config`)."""

    n_topics: int = Field(5, ge=1, description="Number of topics r (= anchor words).")
    anchor_min_docs: int = Field(1, ge=1, description="Only words in at least this many documents may become "
                                                      "anchors.")
    projection_dim: int = Field(0, ge=0, description="Random-project co-occurrence rows to this many dims before "
                                                     "the anchor search (0 = off).")
    cleanup: bool = Field(True, description="Swap each anchor for the farthest row from the span of the others.")
    seed: int = Field(0, description="Seed for the random projection.")
    max_iter: int = Field(10, ge=1, description="Batched active-set iterations before the per-word fallback.")


class TopicTrainConfig(TopicModelConfig):
    """Settings of `skillweave topic-model train`: the learner's, with the command line's ranges and defaults,
    plus which store text to train on."""

    cli_flags: ClassVar[dict[str, str]] = {"n_topics": "--topics", "vocab_size": "--vocab", "selectors": "--items"}

    n_topics: int = Field(5, ge=2, le=200, description="Number of topics r (= anchor words).")
    anchor_min_docs: int = Field(2, ge=1, description="Only words in at least this many items may become anchors.")
    vocab_size: int = Field(500, ge=2, le=3000, description="Keep this many most document-frequent words.")
    min_df: int = Field(2, ge=1, description="A word must appear in at least this many items.")
    selectors: list[str] = Field(default_factory=list, description="Train only on these items (same selector "
                                                                   "syntax as unlearn --forget); default: all items.")
    name: str = Field("store", description="Model family name; versions count up from 1.")

    def learner(self) -> TopicModelConfig:
        """The learner's settings alone (what the model version stores)."""
        return TopicModelConfig(**{k: getattr(self, k) for k in TopicModelConfig.model_fields})


class TopicHeadConfig(TrainerSettings):
    """Settings of `skillweave topic-model head` (a ridge classifier on topic posteriors); the labels and the
    topic model it builds on are arguments."""

    ridge: float = Field(1e-3, gt=0, description="Ridge penalty of the linear head.")


class UnlearnConfig(TrainerSettings):
    """Settings of an unlearning request (`skillweave unlearn`); the forget set, model and head are arguments."""

    epsilon: float = Field(1.0, gt=0, description="Privacy epsilon of the (epsilon, delta)-unlearning guarantee.")
    delta: float = Field(1e-5, gt=0, lt=1, description="Privacy delta.")
    sensitivity: float | None = Field(None, gt=0, description="Sensitivity bound Delta (l2 change of the release); "
                                                              "default: measured for this request.")
    capacity: int = Field(0, ge=0, description="Deletion count m_U the noise must cover (0 = forget-set size); the "
                                               "measured Delta scales linearly to it.")
    utility_threshold: float = Field(0.1, gt=0, description="Deletion capacity: the noise may add at most this "
                                                            "fraction of a released vector's l1 mass; a request "
                                                            "beyond the capacity is refused.")
    noiseless: bool = Field(False, description="Release without noise (testing only: no privacy guarantee).")
    keep_anchors: bool = Field(False, description="Keep the anchor words instead of re-searching them on the "
                                                  "downdated statistics (faster; differs from retraining when "
                                                  "retraining would change the anchors).")
    newton_only: bool = Field(False, description="One Newton step per word, then project onto the simplex (no "
                                                 "active-set continuation): cheaper, approximate.")
    seed: int = Field(0, description="Seed of the Gaussian noise.")
