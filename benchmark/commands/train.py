"""The `train` command: options in, a `TrainSettings` out, errors as click messages.

Exit status: 0 when the run finished or paused at --stop-at-step; 130 when interrupted by
Ctrl-C or SIGTERM (the state is saved, continue with --resume); 1 when the loss diverged;
2 for usage errors (bad options, unusable data, a resume that does not match).
"""

from __future__ import annotations

from pathlib import Path

import click

from benchmark.commands.options import parse_size, resolve_device, writable_folder
from retrieval.devices import PRECISIONS

EXIT_INTERRUPTED = 130

# torch and timm are imported only when `train` runs (they take seconds to import), so the
# names below are checked in callbacks instead of click.Choice lists.


def _one_of(value: str, choices: list[str], what: str) -> str:
    if value not in choices:
        raise click.BadParameter(f"unknown {what} {value!r}; choose from {', '.join(choices)}")
    return value


def _check_method(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from retrieval.model import METHODS

    return _one_of(value, sorted(METHODS), "method")


def _check_schedule(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from retrieval.train.settings import SCHEDULES

    return _one_of(value, list(SCHEDULES), "schedule")


def _check_con_loss(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from retrieval.model.losses import CONTRASTIVE_KINDS

    return _one_of(value, list(CONTRASTIVE_KINDS), "contrastive loss")


def _parse_losses(ctx: click.Context, param: click.Parameter, value: str | None):
    from retrieval.model import LOSS_NAMES

    if value is None:
        return None
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = sorted(set(names) - set(LOSS_NAMES))
    if unknown or not names:
        raise click.BadParameter(
            f"unknown losses {unknown or value!r}; give a comma list of {', '.join(LOSS_NAMES)}"
        )
    return frozenset(names)


def _parse_batch(ctx: click.Context, param: click.Parameter, value: str):
    parts = value.split(",")
    if len(parts) != 2 or not all(part.strip().isdigit() for part in parts):
        raise click.BadParameter(f"expected P,K (instances, images per instance), got {value!r}")
    instances, images = (int(part) for part in parts)
    if instances < 2:
        raise click.BadParameter(f"P must be >= 2 (negatives come from other instances), got "
                                 f"{instances}")
    if images < 2:
        raise click.BadParameter(f"K must be >= 2 (positives need two images of an instance), "
                                 f"got {images}")
    return instances, images


_POSITIVE = click.IntRange(min=1)


@click.command("train")
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              callback=writable_folder,
              help="Run folder: best checkpoint, train_state.pt, train_log.jsonl.")
@click.option("--method", callback=_check_method, default="blur-aware", show_default=True,
              help="blur-aware, standard (no blur/box heads) or sharp-only (blur-aware trained "
                   "on exposure 0 only).")
@click.option("--losses", callback=_parse_losses, metavar="LIST",
              help="Ablation: comma list of con,cls,be,loc (overrides the method's).")
@click.option("--backbone", help="timm model name (default: plainnet_s).")
@click.option("--head", type=click.Choice(["crop", "global"]),
              help="crop: describe a crop around the predicted streak box; global: pool the "
                   "whole image (published). Default: crop when the method has a localisation "
                   "head, else global.")
@click.option("--crop-size", type=click.IntRange(16, 512), default=48, show_default=True,
              help="Side in pixels the crop head resamples its crops to.")
@click.option("--predicted-crops", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Share of training crops taken at the predicted box instead of the "
                   "jittered true box, reached linearly by the last step.")
@click.option("--pretrained", is_flag=True, help="ImageNet backbone weights (timm downloads).")
@click.option("--backbone-weights", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Local backbone weights (.safetensors or state-dict .pt).")
@click.option("--image-size", callback=parse_size, default="96x128", show_default=True,
              metavar="HxW", help="Network input size.")
@click.option("--embedding-dim", type=_POSITIVE, default=128, show_default=True)
@click.option("--epochs", type=_POSITIVE, default=30, show_default=True)
@click.option("--batch", callback=_parse_batch, default="16,4", show_default=True, metavar="P,K",
              help="P instances x K images per step.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-4,
              show_default=True, help="Adam learning rate.")
@click.option("--schedule", callback=_check_schedule, default="constant", show_default=True,
              help="Learning rate over the run: constant (published) or cosine decay.")
@click.option("--steps-per-epoch", type=_POSITIVE,
              help="Default: training images / (P*K).")
@click.option("--checkpoint-every", type=_POSITIVE, default=500, show_default=True,
              help="Save the training state every N steps.")
@click.option("--log-every", type=_POSITIVE, default=10, show_default=True,
              help="Write a loss record every N steps.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--workers", type=click.IntRange(min=0),
              help="Loader processes (default: 0 on <= 2 cores, else cores-2, max 8).")
@click.option("--hard-negatives", is_flag=True,
              help="Closest other-instance images as negatives instead of random ones.")
@click.option("--lookalikes", type=_POSITIVE, default=1, show_default=True, metavar="Q",
              help="Look-alike batches: the P instances come Q at a time from P/Q categories, so "
                   "negatives include instances of the anchor's own category; 1: at random.")
@click.option("--memory", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
              help="Cross-batch memory: the last N embeddings (earlier batches) give each "
                   "anchor its closest other-instance negatives too; 0: off.")
@click.option("--memory-start", type=click.FloatRange(0, 1), default=0.1, show_default=True,
              help="Share of the run after which the memory is read.")
@click.option("--train-instances", type=_POSITIVE, metavar="N",
              help="Train on the first N instance indices of each category (train slots only, "
                   "never a val or test instance) instead of the preset's (synth data sets).")
@click.option("--train-trajectories", type=click.IntRange(min=2), metavar="T",
              help="Trajectories per training instance instead of the preset's (synth data sets).")
@click.option("--val-distractors", type=click.IntRange(min=0), default=0, show_default=True,
              metavar="N",
              help="Validate among N virtual distractors (instances the benchmark never uses; "
                   "rendered once, cached in DATA_DIR/val_distractors) and keep the best "
                   "checkpoint by that figure.")
@click.option("--detach-blur", is_flag=True,
              help="The blur branch's hidden layer enters the embedding without gradient from "
                   "the retrieval losses (it learns from L_be alone).")
@click.option("--isolate-blur", is_flag=True,
              help="The blur branch reads the locator's map without passing gradient back: "
                   "L_be trains the branch's own layers, not the locator that localisation and "
                   "the embedding share.")
@click.option("--blur-input", type=click.Choice(["image", "crop"]), default="image", show_default=True,
              help="What the blur branch pools: the whole image as the locator sees it (the "
                   "published layout), or the descriptor's map of the object's crop (crop head).")
@click.option("--be-weight", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Weight of the blur-estimation loss.")
@click.option("--cls-margin", type=click.FloatRange(min=0, max=1), default=0.15, show_default=True,
              help="Additive cosine margin of the classification head.")
@click.option("--cls-scale", type=click.FloatRange(min=0, min_open=True), default=30.0,
              show_default=True, help="Logit scale of the classification head.")
@click.option("--cls-weight", type=click.FloatRange(min=0), default=0.1, show_default=True,
              help="Weight of the classification loss.")
@click.option("--con-margin", type=click.FloatRange(min=0, max=2, min_open=True), default=0.7,
              show_default=True,
              help="Contrastive margin: negatives farther apart than this cost nothing.")
@click.option("--con-negatives", type=click.IntRange(min=1), default=5, show_default=True,
              help="Negatives mined per anchor by --con-loss pairs or balanced (and read from "
                   "--memory); the published tuples have five.")
@click.option("--con-loss", callback=_check_con_loss, default="pairs", show_default=True,
              help="L_con: the published mined pairs with a margin (one mean over all pairs); "
                   "balanced: the same pairs, positives and negatives averaged apart so the "
                   "pull weighs as much as all the pushes; or a softmax of each image over all "
                   "other instances of the batch (and the memory) with its positives.")
@click.option("--con-temperature", type=click.FloatRange(min=0, max=1, min_open=True),
              default=0.1, show_default=True, help="Temperature of --con-loss softmax.")
@click.option("--spread-weight", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Weight of a spread-out term: the cosines between different instances of "
                   "the batch are pulled to mean 0 and mean square 1/dim, as random directions "
                   "have, so the vectors use more of their width; 0: off.")
@click.option("--init-from", metavar="MODEL",
              help="Start from this checkpoint's weights (a folder or shipped name) instead of "
                   "from scratch; the method, backbone, head and sizes must be its own.")
@click.option("--imprint-head", is_flag=True,
              help="With --init-from: start each training instance's classification row at the "
                   "mean embedding the starting network gives its images, not at a random "
                   "direction, so the fine-tune's first steps do not pull toward random classes.")
@click.option("--photos", metavar="SOURCE", default="",
              help="Dress a share of the training objects and backgrounds in photographs: "
                   "'skimage' (scikit-image's samples, extra [photos]) or a folder of pictures; "
                   "only the source's train photos are used, its held-out ones never.")
@click.option("--photo-share", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Share of instances and of backgrounds that wear photos (with --photos).")
@click.option("--max-val-queries", type=_POSITIVE, default=2000, show_default=True,
              help="Cap on validation queries (evenly spread).")
@click.option("--stop-at-step", type=_POSITIVE,
              help="Pause after this global step, state saved (continue with --resume).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True)
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
              help="Of the training forward pass; auto: bfloat16 on CUDA GPUs that support it, "
                   "float32 on a CPU. bf16 on a CPU with native bfloat16 trained 1.34x faster.")
@click.option("--resume", is_flag=True, help="Continue the run saved in --out.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def train_command(data_dir, out_dir, method, losses, backbone, head, crop_size, predicted_crops,
                  pretrained, backbone_weights, image_size, embedding_dim, epochs, batch, lr,
                  schedule, steps_per_epoch, checkpoint_every, log_every, seed, workers,
                  hard_negatives, lookalikes, memory, memory_start, train_instances,
                  train_trajectories, val_distractors, detach_blur, isolate_blur, blur_input, be_weight,
                  cls_margin, cls_scale, cls_weight, con_margin, con_negatives, con_loss,
                  con_temperature, spread_weight, init_from, imprint_head, photos, photo_share,
                  max_val_queries, stop_at_step,
                  device, precision, resume, quiet):
    """Train an embedding network on DATA_DIR; keep the best model by validation mAP@100.

    A data set written by `synth` trains on its train instances as a composite stream (object
    layers over backgrounds drawn independently of the instance, built once into
    DATA_DIR/train_layers); any other manifest trains on its rows with role 'train'.
    """
    from retrieval.train import DivergedError, TrainError, TrainSettings, train

    if not (data_dir / "manifest.parquet").is_file() and not data_dir.is_file():
        raise click.BadParameter(f"{data_dir}: no manifest.parquet there",
                                 param_hint="DATA_DIR")
    if pretrained and backbone_weights is not None:
        raise click.UsageError("give either --pretrained or --backbone-weights, not both")
    chosen_backbone = {"backbone": backbone} if backbone else {}
    settings = TrainSettings(
        data_dir=data_dir, out_dir=out_dir, method=method, losses=losses, **chosen_backbone,
        pretrained=pretrained, backbone_weights=backbone_weights, image_size=image_size,
        embedding_dim=embedding_dim, epochs=epochs, instances_per_batch=batch[0],
        images_per_instance=batch[1], lr=lr, schedule=schedule, steps_per_epoch=steps_per_epoch,
        checkpoint_every=checkpoint_every, log_every=log_every, seed=seed, workers=workers,
        hard_negatives=hard_negatives, instances_per_category=lookalikes, memory_size=memory,
        memory_start=memory_start, train_instances=train_instances,
        train_trajectories=train_trajectories, val_distractors=val_distractors,
        photos=photos, photo_share=photo_share, init_from=init_from,
        imprint_head=imprint_head,
        detach_blur=detach_blur, isolate_blur=isolate_blur, be_weight=be_weight,
        blur_input=blur_input,
        cls_margin=cls_margin, cls_weight=cls_weight,
        con_margin=con_margin, con_negatives=con_negatives, con_loss=con_loss,
        con_temperature=con_temperature,
        spread_weight=spread_weight,
        cls_scale=cls_scale, head=head, crop_size=crop_size,
        predicted_crop_fraction=predicted_crops, max_val_queries=max_val_queries,
        device=resolve_device(device), precision=precision, resume=resume,
        stop_at_step=stop_at_step,
        progress=not quiet,
    )
    try:
        outcome = train(settings)
    except TrainError as exc:
        raise click.UsageError(str(exc)) from exc
    except DivergedError as exc:
        raise click.ClickException(str(exc)) from exc

    best = "n/a" if outcome.best_metric is None else f"{100 * outcome.best_metric:.2f}"
    if outcome.status == "interrupted":
        click.echo(f"{outcome.signal}: stopped at step {outcome.step}; state saved in {out_dir}; "
                   "continue with --resume", err=True)
        click.get_current_context().exit(EXIT_INTERRUPTED)
    if outcome.status == "paused":
        click.echo(f"paused at step {outcome.step} (epoch {outcome.epochs_done}); continue with "
                   "--resume")
        return
    if outcome.skipped_images:
        click.echo(f"{outcome.skipped_images} training images could not be loaded (see "
                   f"{out_dir / 'train_log.jsonl'})", err=True)
    click.echo(f"trained {outcome.epochs_done} epochs ({outcome.step} steps); best validation "
               f"mAP@100 {best}; checkpoint: {outcome.checkpoint}")
