"""`tina-edge convert`: make a bundle portable (JS, mobile) without torch."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import click



@click.command("convert")
@click.argument("bundle", required=False, type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for the converted bundle (the source is never modified).")
@click.option("--ort", "to_ort", is_flag=True, help="Also convert the graphs to ORT format and write "
              "required_operators.config (for a minimal onnxruntime build on mobile).")
@click.option("--steps", type=click.IntRange(1, 1000), default=None, help="DDIM steps unrolled in generate.onnx "
              "(default: the bundle's default_steps).")
@click.option("--keep-dynamic-int8", is_flag=True, help="Keep a dynamic-int8 text encoder as it is (by default it "
              "becomes weight-only int8: same size, embeddings independent of the batch and equal on every platform).")
@click.option("--keep-template-shapes", is_flag=True, help="Keep a template that computes its padding at run time as "
              "it is (by default the padding becomes constants: same outputs, about 2x faster predict, whole-graph NNAPI/CoreML).")
@click.option("--no-everyday-keys", is_flag=True, help="Do not add the everyday words of seen classes (kitty, tee, "
              "fridge, ...) as keys of the text prior (export/portable/everyday_keys.py).")
@click.option("--keep-float32", is_flag=True, help="Keep float32 weights in the denoiser, generate.onnx and the "
              "template's trunk (by default they are stored as float16 + Cast: half the download, same accuracy; "
              "benchmarks/notes/bundle-size.md).")
@click.option("--prior-only", is_flag=True, help="Zero the denoiser's learned correction: the generator becomes the text "
              "prior alone (as good on seen classes, better on new names: BENCHMARKS §15) and personalize runs no "
              "denoiser step; the seed then changes nothing (export/portable/prior_only.py).")
@click.option("--force", is_flag=True, help="Replace an existing output directory.")
def convert(bundle, output, to_ort, steps, keep_dynamic_int8, keep_template_shapes, no_everyday_keys, keep_float32,
            prior_only, force):
    """Copy BUNDLE (default: the embedded one) to -o, add generate.onnx and tokenizer_config.json and
    rewrite template.onnx with its weights as graph inputs (one template for every runtime) (what the JavaScript package and other ports need); --ort for mobile."""
    from ..export.portable.generate import add_portable_files
    from ..runtime.atomic import atomic_output_dir, atomic_write_bytes
    from ..runtime.bundle import open_bundle
    from ..runtime.manifest import write_manifest

    from .output import Output, bundle_reads, check_outputs

    check_outputs([Output(output, "-o", kind="dir")], force=force, reads=bundle_reads(bundle))
    b = open_bundle(bundle)  # verified before anything is copied
    try:
        with atomic_output_dir(output, overwrite=force) as tmp:
            tmp = Path(tmp)
            for name in sorted(b.manifest.files):  # the verified bytes, never a second read of the source
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(tmp / name, b.data(name))
            write_manifest(tmp, copy.deepcopy(b.manifest))
            m = add_portable_files(tmp, steps, keep_dynamic_int8=keep_dynamic_int8, keep_float32=keep_float32,
                                   static_template=not keep_template_shapes, everyday_keys=not no_everyday_keys,
                                   prior_only=prior_only)
            if to_ort:
                from ..export.portable.ort_format import convert_bundle_to_ort

                m = convert_bundle_to_ort(tmp)
            open_bundle(tmp).close()  # what we wrote, we can open
    finally:
        b.close()
    click.echo(json.dumps({"bundle": str(output), "bundle_id": m.bundle_id,
                           "files": {n: e["bytes"] for n, e in m.files.items()},
                           "total_bytes": sum(e["bytes"] for e in m.files.values())}))


COMMANDS = [convert]
