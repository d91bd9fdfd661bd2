"""``mclnf dataset``: make a procedural city scene, ingest a scene into a ray store, inspect one.

    mclnf dataset make-city OUT [--blocks-x 3 ...]        (every CityConfig field is a flag)
    mclnf dataset ingest SCENE URI [--blocks-x 2 --downscale 4 --holdout-every 8 ...]
    mclnf dataset info URI

Flags are generated from the config dataclasses (``CityConfig``, ``IngestOptions``), so a new
config field is a new flag with its docstring as help, and the CLI cannot drift from the configs.
"""

import argparse
import ast
import dataclasses
import inspect
import json
import logging
import types
import typing

from mclnf_dist.raystore.ingest import check_scene, ingest_scene
from mclnf_dist.raystore.store import IngestOptions, load_manifest
from mclnf_dist.scenes import city
from mclnf_dist.scenes.city import make_city

if typing.TYPE_CHECKING:
    from mclnf_dist.raystore.store import Manifest


def field_docs(cls: type) -> dict[str, str]:
    """The one-line docstring under each field of dataclass ``cls`` (``""`` where there is none)."""
    try:
        tree = ast.parse(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    docs, body = {}, tree.body[0].body
    for node, after in zip(body, body[1:], strict=False):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
                docs[node.target.id] = " ".join(str(after.value.value).split())
    return docs


def scalar_type(annotation) -> type | None:
    """``int``/``float``/``str``/``bool`` for a (possibly ``X | None``) annotation, else None."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        return scalar_type(options[0]) if len(options) == 1 else None
    return annotation if annotation in (int, float, str, bool) else None


def add_dataclass_flags(parser: argparse.ArgumentParser, cls: type, skip: set[str]) -> list[str]:
    """Add ``--field-name`` for each scalar field of ``cls``; returns the field names added."""
    docs, hints, added = field_docs(cls), typing.get_type_hints(cls), []
    for item in dataclasses.fields(cls):
        kind = scalar_type(hints[item.name])
        if kind is None or item.name in skip:
            continue
        flag = "--" + item.name.replace("_", "-")
        default = item.default if item.default is not dataclasses.MISSING else None
        help_ = f"{docs.get(item.name, '')} (default: {default})".replace("%", "%%")
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_)
        else:
            parser.add_argument(flag, type=kind, help=help_)
        added.append(item.name)
    return added


def build_config(cls: type, args: argparse.Namespace, names: list[str]):
    """An instance of ``cls`` with the flags that were given (the rest keep their defaults)."""
    given = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    return cls(**given)


def city_config_class() -> type:

    return city.CityConfig


def main(argv: list[str]) -> None:
    """Run ``mclnf dataset <make-city | ingest | info> ...``."""

    parser = argparse.ArgumentParser(prog="mclnf dataset", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    make = commands.add_parser("make-city", help="render a procedural city scene (transforms.json)")
    make.add_argument("out", help="output folder of the scene")
    try:
        city_fields = add_dataclass_flags(make, city_config_class(), skip=set())
    except ImportError:  # the generator is optional for the other subcommands
        city_fields = []

    ingest = commands.add_parser("ingest", help="partition a scene's rays into a Parquet store")
    ingest.add_argument("scene", help="scene folder with transforms.json (or the file itself)")
    ingest.add_argument("uri", help="store root: a local folder or s3://bucket/prefix")
    ingest.add_argument("--num-cpus", type=int, help="CPUs for a local Ray (if none is running)")
    ingest_fields = add_dataclass_flags(ingest, IngestOptions, skip={"fail_chunk"})

    info = commands.add_parser("info", help="summarise a ray store's manifest")
    info.add_argument("uri")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "make-city":
        config = build_config(city_config_class(), args, city_fields)
        print(json.dumps({"scene": make_city(args.out, config)}))
    elif args.command == "ingest":
        options = build_config(IngestOptions, args, ingest_fields)
        check_scene(args.scene, options)  # every bad file or frame stops here, before Ray starts
        if args.num_cpus:
            import ray

            if not ray.is_initialized():
                ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
        manifest = ingest_scene(args.scene, args.uri, options)
        print(json.dumps(summary(args.uri, manifest)))
    else:
        print(json.dumps(summary(args.uri, load_manifest(args.uri)), indent=1))


def summary(uri: str, manifest: "Manifest") -> dict:
    """A short JSON-able summary: where, how many rays per block, how big."""
    return {
        "uri": uri,
        "blocks": manifest.partition.num_blocks,
        "grid": list(manifest.partition.grid_shape),
        "time_slices": manifest.partition.time_slices,
        "rays": sum(manifest.block_rows.values()),
        "block_rows": {str(k): v for k, v in manifest.block_rows.items()},
        "shards": len(manifest.shards),
        "bytes": sum(s["bytes"] for s in manifest.shards),
        "source": manifest.source,
    }
