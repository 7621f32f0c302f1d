"""`blur-retrieval synth`: render a synthetic motion-blur data set."""

from __future__ import annotations

from dataclasses import replace

import click

from benchmark.commands.options import parse_size, resolve_device, writable_file, writable_folder
from retrieval.sim.layout import PRESETS

_POSITIVE = click.IntRange(min=1)


@click.command()
@click.argument("out_dir", type=click.Path(file_okay=False), callback=writable_folder)
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="small", show_default=True,
              help="Data set size; the options below override its fields.")
@click.option("--categories", type=click.IntRange(1, 400), help="Object categories.")
@click.option("--instances", type=_POSITIVE, help="Instances per category (70/15/15 split).")
@click.option("--trajectories", type=_POSITIVE, help="Trajectories per instance.")
@click.option("--size", callback=parse_size, metavar="HxW", help="Image size, e.g. 96x128.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--distractors", type=click.IntRange(min=0), help="Distractor images.")
@click.option("--virtual", is_flag=True, help="Write no image files: rows are rendered on demand.")
@click.option("--splits", default="train,val,test", show_default=True,
              help="Instance splits to render (comma-separated); distractors are always added.")
@click.option("--preview", type=click.Path(dir_okay=False), callback=writable_file,
              help="Write an exposure contact sheet PNG.")
@click.option("--preview-instances", type=click.Path(dir_okay=False), callback=writable_file,
              help="Write a PNG of category 0's first instances (rows) along three trajectories "
                   "at exposures 0, 5 and 10 (columns).")
@click.option("--photos", metavar="SOURCE", default="",
              help="Dress a share of the objects and backgrounds in photographs: 'skimage' "
                   "(scikit-image's samples, extra [photos]) or a folder of pictures.")
@click.option("--photo-split", type=click.Choice(["train", "heldout"]), default="train",
              show_default=True, help="Which of the source's photos (with --photos).")
@click.option("--photo-share", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Share of instances and of backgrounds that wear photos (with --photos).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--batch-size", type=_POSITIVE, default=32, show_default=True,
              help="Trajectories rendered together.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def synth(out_dir, preset, categories, instances, trajectories, size, seed, distractors, virtual,
          splits, preview, preview_instances, photos, photo_split, photo_share, device, batch_size,
          quiet):
    """Render a synthetic motion-blur data set into OUT_DIR (PNGs + manifest.parquet)."""
    from retrieval.sim.photos import PhotoError, load_photos
    from retrieval.sim.preview import instance_sheet, preview_sheet, write_sheet
    from retrieval.synth import SETTINGS_NAME, synthesize

    chosen = PRESETS[preset]
    overrides = {
        "categories": categories, "instances": instances, "trajectories": trajectories,
        "distractors": distractors,
    }
    chosen = replace(chosen, **{k: v for k, v in overrides.items() if v is not None})
    if size is not None:
        chosen = replace(chosen, height=size[0], width=size[1])
    config = chosen.sim_config(seed)
    if photos:
        try:
            load_photos(photos, photo_split)
        except PhotoError as exc:
            raise click.BadParameter(str(exc), param_hint="--photos") from exc
        config = replace(config, photos=photos, photo_split=photo_split, photo_share=photo_share)
    device = resolve_device(device)
    chosen_splits = [part.strip() for part in splits.split(",") if part.strip()]
    if not chosen_splits or set(chosen_splits) - {"train", "val", "test"}:
        raise click.BadParameter(f"expected a subset of train,val,test, got {splits!r}",
                                 param_hint="--splits")
    manifest = synthesize(out_dir, chosen, config, virtual=virtual, device=device,
                          batch_size=batch_size, progress=not quiet, splits=chosen_splits)
    click.echo(f"wrote {manifest}")
    click.echo(f"wrote {manifest.parent / SETTINGS_NAME}")
    if preview:
        click.echo(f"wrote {write_sheet(preview, preview_sheet(config, 0, 0, 0))}")
    if preview_instances:
        click.echo(f"wrote {write_sheet(preview_instances, instance_sheet(config, 0))}")

