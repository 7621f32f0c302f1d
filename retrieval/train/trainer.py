"""The training loop: P x K batches, the published losses, Adam, validation, resumable state.

One run lives in one folder (CKPT_DIR): the best model by validation mAP@100 as an inference
checkpoint (`model.safetensors` + `config.json`), `train_state.pt` to resume, and
`train_log.jsonl`. A run of N steps and the same run interrupted at step k then resumed end with
bit-identical weights on CPU: batches are a pure function of (seed, epoch, position), and the
state carries every random generator the loop draws from.

Learning rate: constant by default, as published (Adam, 1e-4). `schedule="cosine"` decays it to
zero over the whole run, which lets larger rates (1e-3) settle; the published recipe did not use
it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from retrieval.devices import cpu_has_native_bf16, training_autocast, training_precision
from retrieval.embed import (
    CHANNELS_LAST,
    Embedder,
    PixelBatches,
    default_workers,
    pixel_loader,
    to_model_input,
)
from retrieval.model import (
    BackboneWeightsError,
    BlurAwareNet,
    MarginSoftmaxHead,
    method_spec,
    save_checkpoint,
    spec_for_losses,
    total_loss,
)
from retrieval.train.data import (
    default_steps_per_epoch,
)
from retrieval.train.errors import DivergedError, TrainError
from retrieval.train.imprint import imprint_head, imprint_steps
from retrieval.train.init_weights import start_from_checkpoint
from retrieval.train.interrupts import StopRequests
from retrieval.train.memory import CrossBatchMemory
from retrieval.train.run_data import batch_sampler, load_run_data
from retrieval.train.settings import (
    FREE_ON_RESUME,
    SCHEDULES,
    LearningRateFactor,
    TrainOutcome,
    TrainSettings,
    loss_config,
)
from retrieval.train.state import (
    LOG_FILENAME,
    STATE_FILENAME,
    TrainLog,
    check_same_identity,
    load_train_state,
    save_train_state,
)
from retrieval.train.stream import (
    StreamBatches,
    training_crop_boxes,
)
from retrieval.train.validation import TOP_K, evaluate

LOG = logging.getLogger(__name__)
METRIC = f"map@{TOP_K}"


class Trainer:
    """One run: built from settings (data checked, model made), then `run()`."""

    def __init__(self, settings: TrainSettings) -> None:
        if settings.schedule not in SCHEDULES:
            raise TrainError(f"unknown schedule {settings.schedule!r}; choose from {SCHEDULES}")
        if settings.imprint_head and not settings.init_from:
            raise TrainError("--imprint-head needs --init-from (a network to imprint from)")
        self.settings = settings
        self.device = torch.device(settings.device)
        try:
            self.precision = training_precision(settings.precision, self.device)
        except ValueError as exc:
            raise TrainError(str(exc)) from exc
        if self.precision == "bf16" and self.device.type == "cpu" and not cpu_has_native_bf16():
            LOG.warning("this CPU has no native bfloat16 (AVX512-BF16 or AMX): bf16 training "
                        "is emulated and likely slower than fp32")
        self.out_dir = Path(settings.out_dir)
        self.spec = self._method_spec()
        if settings.imprint_head and "cls" not in self.spec.losses:
            raise TrainError("--imprint-head needs the classification loss (cls) to imprint")
        self.loss_config = loss_config(settings, self.spec.losses)
        run_data = load_run_data(settings, self.spec)
        self.data, self.stream = run_data.training, run_data.stream
        self.validation = run_data.validation
        self.data_fingerprint = run_data.fingerprint
        batch_images = settings.instances_per_batch * settings.images_per_instance
        self.steps_per_epoch = settings.steps_per_epoch or default_steps_per_epoch(
            len(self.data.items), batch_images)
        self.sampler = batch_sampler(settings, self.data)
        self.workers = default_workers() if settings.workers is None else settings.workers
        self.log = TrainLog(self.out_dir / LOG_FILENAME)
        self.state_path = self.out_dir / STATE_FILENAME
        self._build_model()
        self.step = self.epoch = self.position = self.skipped_images = 0
        self.best_metric: float | None = None  # -inf: a validation that scored nothing
        self._interval = {"images": 0, "start": time.perf_counter(), "sums": {}, "steps": 0}

    # ----- setup ---------------------------------------------------------------------------
    def _method_spec(self):
        try:
            spec = method_spec(self.settings.method)
            return spec_for_losses(self.settings.losses) if self.settings.losses else spec
        except ValueError as exc:
            raise TrainError(str(exc)) from exc

    def _build_model(self) -> None:
        settings = self.settings
        torch.manual_seed(settings.seed)
        try:
            model = BlurAwareNet(
                backbone=settings.backbone, embedding_dim=settings.embedding_dim,
                blur_head=self.spec.heads.blur_head, loc_head=self.spec.heads.loc_head,
                pretrained=settings.pretrained, backbone_weights=settings.backbone_weights,
                head=self.head_kind, crop_size=settings.crop_size, blur_input=settings.blur_input)
        except BackboneWeightsError as exc:
            raise TrainError(str(exc)) from exc
        except (RuntimeError, ValueError) as exc:  # timm: RuntimeError for unknown names
            raise TrainError(f"backbone {settings.backbone!r}: {exc}") from exc
        self.init_fingerprint = (start_from_checkpoint(model, settings.init_from)
                                 if settings.init_from else None)
        head = None
        if "cls" in self.spec.losses:
            head = MarginSoftmaxHead(settings.embedding_dim, self.data.num_classes,
                                     scale=settings.cls_scale, margin=settings.cls_margin)
        self.model = model.to(self.device, memory_format=CHANNELS_LAST).train()
        self.head = head.to(self.device) if head is not None else None
        parameters = list(self.model.parameters())
        if self.head is not None:
            parameters += list(self.head.parameters())
        self.optimizer = torch.optim.Adam(parameters, lr=settings.lr)
        factor = LearningRateFactor(settings.schedule, settings.epochs * self.steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        self.mining_rng = torch.Generator(device=self.device).manual_seed(settings.seed)
        self.memory = None
        if settings.memory_size:
            start = round(settings.memory_start * settings.epochs * self.steps_per_epoch)
            self.memory = CrossBatchMemory(settings.memory_size, settings.embedding_dim,
                                           self.device, start)
        self.crop_rng = torch.Generator().manual_seed(settings.seed + 1)

    @property
    def head_kind(self) -> str:
        if self.settings.head is not None:
            return self.settings.head
        return "crop" if self.spec.heads.loc_head else "global"

    def _identity(self) -> dict[str, Any]:
        """The settings that decide the weights, as plain values (stored in the state)."""
        identity = {
            key: value for key, value in asdict(self.settings).items()
            if key not in FREE_ON_RESUME
        }
        identity["losses"] = sorted(self.spec.losses)
        identity["head"] = self.head_kind
        identity["image_size"] = list(self.settings.image_size)
        identity["backbone_weights"] = (str(self.settings.backbone_weights)
                                        if self.settings.backbone_weights else None)
        identity["steps_per_epoch"] = self.steps_per_epoch
        identity["data_fingerprint"] = self.data_fingerprint
        if self.init_fingerprint is not None:
            identity["init_fingerprint"] = self.init_fingerprint
        return identity

    # ----- state -----------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "position": self.position,
            "best_metric": self.best_metric,
            "skipped_images": self.skipped_images,
            "model": self.model.state_dict(),
            "head": self.head.state_dict() if self.head is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda"
            else None,
            "mining_rng": self.mining_rng.get_state(),
            "crop_rng": self.crop_rng.get_state(),
            "memory": self.memory.state_dict() if self.memory is not None else None,
            "identity": self._identity(),
        }

    def _save_state(self) -> None:
        save_train_state(self.state_path, self._state())

    def _restore(self) -> None:
        state = load_train_state(self.state_path)
        check_same_identity(self.state_path, state.get("identity", {}), self._identity())
        self.model.load_state_dict(state["model"])
        if self.head is not None:
            self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        if self.device.type == "cuda" and state["cuda_rng"] is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.mining_rng.set_state(state["mining_rng"])
        self.crop_rng.set_state(state["crop_rng"])
        if self.memory is not None:
            self.memory.load_state_dict(state["memory"])
        self.step, self.epoch, self.position = state["step"], state["epoch"], state["position"]
        self.best_metric = state["best_metric"]
        self.skipped_images = state["skipped_images"]

    def _start(self) -> None:
        if self.settings.resume:
            self._restore()
            self.log.trim_after(self.step, self.epoch)
        elif self.state_path.exists():
            raise TrainError(f"{self.state_path}: a run already exists in this folder; pass "
                             "--resume to continue it or choose another --out")
        if self.validation is None:
            LOG.warning("%s: no rows with role 'val'; the latest model is kept instead of the best one",
                        self.data.manifest)
        self.log.append({
            "event": "resume" if self.settings.resume else "start",
            "step": self.step, "epoch": self.epoch,
            "train_rows": len(self.data.items), "train_instances": self.data.num_classes,
            "dropped_instances": self.data.dropped_instances,
            "steps_per_epoch": self.steps_per_epoch, "losses": sorted(self.spec.losses),
            "val_queries": len(self.validation.queries) if self.validation else 0,
            "val_database": len(self.validation.database) if self.validation else 0,
        })
        if self.settings.imprint_head and not self.settings.resume:
            self._imprint_head()

    # ----- loop ------------------------------------------------------------------------------
    def run(self) -> TrainOutcome:
        self._start()
        settings = self.settings
        total = settings.epochs * self.steps_per_epoch
        bar = tqdm(total=total, initial=min(self.step, total), unit="step", desc="train",
                   disable=not settings.progress, dynamic_ncols=True)
        with StopRequests() as stop, bar:
            while self.epoch < settings.epochs:
                status = self._train_epoch(stop, bar)
                if status is not None:
                    self._save_state()
                    return self._outcome(status, stop.requested)
                validation_started = time.perf_counter()
                self._end_epoch()
                # The logged images/s measure the training steps, not the validation between.
                self._interval["start"] += time.perf_counter() - validation_started
        return self._outcome("finished", None)

    def _outcome(self, status: str, signal_name: str | None) -> TrainOutcome:
        has_checkpoint = (self.out_dir / "config.json").is_file()
        best = self.best_metric if self.best_metric is not None and math.isfinite(
            self.best_metric) else None
        return TrainOutcome(status, self.step, self.epoch, best,
                            self.out_dir if has_checkpoint else None, self.skipped_images,
                            signal_name)

    def _train_epoch(self, stop: StopRequests, bar: tqdm) -> str | None:
        """Train the rest of the current epoch; "interrupted"/"paused" if it stopped early."""
        plan = self.sampler.epoch_batches(self.epoch, self.steps_per_epoch)
        batches = self._batches(self.epoch, plan, range(self.position, self.steps_per_epoch))
        for _ in range(self.position, self.steps_per_epoch):
            if stop.requested:
                return "interrupted"
            self._train_step(next(batches))
            self.position += 1
            self.step += 1
            bar.update(1)
            self._log_interval(bar)
            if self.step % self.settings.checkpoint_every == 0:
                self._save_state()
            if self.step == self.settings.stop_at_step:
                return "paused"
        return "interrupted" if stop.requested else None

    def _batches(self, epoch: int, plan: list[np.ndarray], order: range
                 ) -> Iterator[dict[str, Any]]:
        """The loaded batches of `plan` (positions `order`), rendered or read as the data needs."""
        if self.stream is not None:
            dataset = StreamBatches(self.stream, plan, epoch)
        else:
            render_device = "cpu" if self.workers else str(self.device)
            dataset = PixelBatches(self.data.items, plan, self.settings.image_size, render_device)
        return iter(pixel_loader(dataset, self.workers, pin_memory=self.device.type == "cuda",
                                 order=order))

    def _imprint_head(self) -> None:
        """--imprint-head: the head starts at the initial network's class means (train.imprint),
        from a batch plan of an epoch index training never reaches."""
        steps = imprint_steps(self.data.num_classes, self.settings.instances_per_batch)
        epoch = self.settings.epochs
        plan = self.sampler.epoch_batches(epoch, steps)
        batches = tqdm(self._batches(epoch, plan, range(steps)), total=steps, unit="batch",
                       desc="imprint", disable=not self.settings.progress, dynamic_ncols=True)
        inputs = ((to_model_input(batch["pixels"], self.device),
                   self.data.targets(batch["ok"].numpy(), self.device)["instance"])
                  for batch in batches if len(batch["ok"]))
        classes = imprint_head(self.head, self.model, inputs, LOG.warning)
        self.log.append({"event": "imprint", "step": 0, "classes": classes, "batches": steps})
        self._interval["start"] = time.perf_counter()  # the first logged rate: training alone

    def _train_step(self, batch: dict[str, Any]) -> None:
        for index, message in batch["errors"]:
            self.skipped_images += 1
            LOG.warning("skipped training image: %s", message)
            self.log.append({"event": "skipped_image", "step": self.step + 1,
                             "row": int(index), "message": str(message)})
        rows = batch["ok"].numpy()
        if len(rows) == 0:
            return
        self.model.train()
        images = to_model_input(batch["pixels"], self.device)
        targets = self.data.targets(rows, self.device)
        if "box" in batch:  # the stream flips images, and their boxes with them
            targets["box"] = batch["box"].to(self.device)
        crop_boxes = None
        if self.model.head == "crop":
            total = self.settings.epochs * self.steps_per_epoch
            fraction = self.settings.predicted_crop_fraction * min(1.0, self.step / total)
            crop_boxes = training_crop_boxes(targets["box"], fraction, self.crop_rng)
        with training_autocast(self.device, self.precision):
            output = self.model(images, crop_boxes=crop_boxes,
                                detach_blur=self.settings.detach_blur,
                                isolate_blur=self.settings.isolate_blur)
        logits = self.head(output.embedding, targets["instance"]) if self.head else None
        memory = self.memory.contents(self.step) if self.memory is not None else None
        loss, parts = total_loss(output, logits, targets, self.loss_config,
                                 generator=self.mining_rng, memory=memory)
        if not math.isfinite(parts["total"]):
            raise DivergedError(f"loss became {parts['total']} at step {self.step + 1} "
                                f"(parts {parts}); try a lower --lr")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        if self.memory is not None:
            self.memory.push(output.embedding, targets["instance"])
        interval = self._interval
        interval["images"] += len(rows)
        interval["steps"] += 1
        for name, value in parts.items():
            interval["sums"][name] = interval["sums"].get(name, 0.0) + value

    def _log_interval(self, bar: tqdm) -> None:
        interval = self._interval
        if self.step % self.settings.log_every != 0 or interval["steps"] == 0:
            return
        elapsed = max(time.perf_counter() - interval["start"], 1e-9)
        losses = {name: total / interval["steps"] for name, total in interval["sums"].items()}
        rate = interval["images"] / elapsed
        self.log.append({"event": "train", "step": self.step, "epoch": self.epoch + 1,
                         "loss": losses, "lr": self.scheduler.get_last_lr()[0],
                         "images_per_s": rate})
        bar.set_postfix(loss=f"{losses['total']:.4f}", img_s=f"{rate:.1f}", refresh=False)
        self._interval = {"images": 0, "start": time.perf_counter(), "sums": {}, "steps": 0}

    def _end_epoch(self) -> None:
        """Validate, keep the model if it is the best so far, and save the state."""
        epochs_done = self.epoch + 1
        metrics = None
        if self.validation is not None:
            embedder = Embedder.from_model(self.model, {"image_size": list(self.settings.image_size)},
                                           batch_size=self.settings.val_batch_size,
                                           workers=self.workers)
            metrics = evaluate(embedder, self.validation)
            score = metrics[METRIC] if metrics[METRIC] is not None else -math.inf
            improved = self.best_metric is None or score > self.best_metric
            self.log.append({"event": "validation", "epoch": epochs_done, "step": self.step,
                             **metrics, "best": improved})
        else:
            score, improved = -math.inf, True
        if improved:
            self.best_metric = score
            save_checkpoint(self.out_dir, self.model, self._checkpoint_config(metrics, epochs_done),
                            half=True)
        self.epoch, self.position = epochs_done, 0
        self._save_state()

    def _checkpoint_config(self, metrics: dict | None, epochs_done: int) -> dict[str, Any]:
        settings = self.settings
        return {
            "image_size": list(settings.image_size),
            "method": settings.method,
            "losses": sorted(self.spec.losses),
            "data_fingerprint": self.data_fingerprint,
            "validation": metrics,
            "epoch": epochs_done,
            "step": self.step,
            "training": {
                "lr": settings.lr, "schedule": settings.schedule, "seed": settings.seed,
                "batch": [settings.instances_per_batch, settings.images_per_instance],
                "steps_per_epoch": self.steps_per_epoch, "epochs": settings.epochs,
                "hard_negatives": settings.hard_negatives, "pretrained": settings.pretrained,
                "instances_per_category": settings.instances_per_category,
                "memory_size": settings.memory_size, "memory_start": settings.memory_start,
                "val_distractors": settings.val_distractors, "detach_blur": settings.detach_blur,
                "isolate_blur": settings.isolate_blur, "be_weight": settings.be_weight,
                "cls_margin": settings.cls_margin, "cls_weight": settings.cls_weight,
                "cls_scale": settings.cls_scale, "head": self.head_kind,
                "predicted_crop_fraction": settings.predicted_crop_fraction,
                "stream": "composite" if self.stream is not None else "files",
                "con_margin": settings.con_margin, "con_negatives": settings.con_negatives,
                "precision": self.precision,
                "con_loss": settings.con_loss, "con_temperature": settings.con_temperature,
                "spread_weight": settings.spread_weight,
                "train_rows": len(self.data.items), "train_instances": self.data.num_classes,
                **({"photos": settings.photos, "photo_share": settings.photo_share}
                   if settings.photos else {}),
                **({"init_from": str(settings.init_from), "init_fingerprint": self.init_fingerprint,
                    "imprint_head": settings.imprint_head}
                   if settings.init_from else {}),
            },
        }


def train(settings: TrainSettings) -> TrainOutcome:
    """Run (or resume) training as `settings` say; see the module docstring for the files."""
    return Trainer(settings).run()
