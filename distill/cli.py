"""`python -m distill`: run a job from a JSON file, list the student architectures, or list a network's layers.

stdout carries one JSON event per line (the worker reads it); a human progress bar goes to stderr when it
is a terminal. Exit codes: 0 ok, 1 internal error, 2 user error, 3 cancelled (see distill.errors).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Literal, TextIO, get_args

from pydantic import BaseModel, ValidationError

from distill.config import ArchitectureSpec, JobConfig, TeacherFormat
from distill.errors import EXIT_CANCELLED, EXIT_INTERNAL_ERROR, EXIT_OK, EXIT_USER_ERROR, Cancelled, UserError
from distill.events import Emitter, JsonLinesEmitter
from distill.progress import ProgressBar
from distill.training.stop import StopFlag


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "archs":
        return _archs(as_json=args.json)
    if args.command == "layers":
        return _layers(args, parser)
    if args.command == "check":
        return _check(args)
    return _run(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m distill", description="Distillery's distillation engine.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="train a student from a teacher as JOB.json describes",
        description="Train a student from a teacher. JOB.json is the body of POST /v1/jobs with local paths "
        "(relative paths are relative to JOB.json's folder). Events go to stdout as JSON lines.",
        epilog="fields of JOB.json:\n" + "\n".join(_field_help(JobConfig)),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("job", type=Path, help="the job document (JSON)")
    run.add_argument("--out", type=Path, required=True, help="folder for artifacts and checkpoints")
    run.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if present")
    run.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (overrides training.device)")
    run.add_argument(
        "--progress",
        choices=["auto", "bar", "none"],
        default="auto",
        help="progress bar on stderr (auto: when stderr is a terminal)",
    )
    archs = sub.add_parser("archs", help="list the student architectures and their parameters")
    archs.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _layers_parser(sub)
    check = sub.add_parser(
        "check",
        help="check JOB.json without training (what the service runs at submission, in its probe)",
        description="Load the data and the teacher, build the student and pair the layers as `run` would, "
        'without training. With --json, stdout is {"ok": true}, or on exit 2 one error event.',
    )
    check.add_argument("job", type=Path, help="the job document (JSON)")
    check.add_argument("--json", action="store_true", help="print JSON instead of a message")
    return parser


def _layers_parser(sub: Any) -> None:
    layers = sub.add_parser(
        "layers",
        help="list the module paths (with output shapes) that knowledge terms may name",
        description="List a network's layers: a registry architecture (--architecture NAME), a checkpoint "
        "(--checkpoint PATH; weights-only formats also need the architecture) or an ONNX student (--student "
        "PATH). With --json, stdout is one JSON "
        'object {"input_shape", "data": [{"path", "shape", "type"}], "note"}, or on exit 2 one error event.',
    )
    layers.add_argument(
        "--checkpoint", type=Path, help="a teacher checkpoint (TorchScript, ONNX, safetensors or a state_dict)"
    )
    layers.add_argument(
        "--student", type=Path, help="an ONNX student graph: its tensor names as the engine converts it"
    )
    layers.add_argument(
        "--architecture", help="a registered architecture (python -m distill archs): the network, or the checkpoint's"
    )
    layers.add_argument(
        "--architecture-json", help='instead of --architecture/--kwargs: {"name": ..., "kwargs": {...}}'
    )
    layers.add_argument("--kwargs", default="{}", help="the architecture's arguments as a JSON object")
    layers.add_argument(
        "--format", choices=list(get_args(TeacherFormat)), help="the checkpoint's format (detected if omitted)"
    )
    layers.add_argument("--input-shape", required=True, help="one example's shape without the batch dim, e.g. 1,28,28")
    layers.add_argument("--num-classes", type=int, default=10, help="outputs of a registry architecture (default 10)")
    layers.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _field_help(model: type[BaseModel], prefix: str = "") -> list[str]:
    """One line per field, recursing into nested specs, e.g. `knowledge.temperature (default 4.0): ...`."""
    lines = []
    for name, field in model.model_fields.items():
        key = prefix + (field.alias or name)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            lines.extend(_field_help(annotation, key + "."))
            continue
        nested = [a for a in getattr(annotation, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)]
        default = "required" if field.is_required() else f"default {field.get_default(call_default_factory=True)!r}"
        choices = getattr(annotation, "__args__", ()) if getattr(annotation, "__origin__", None) is Literal else ()
        one_of = f" One of: {', '.join(map(str, choices))}." if choices else ""
        lines.append(f"  {key} ({default}): {field.description or ''}{one_of}")
        for sub in nested:
            lines.extend(_field_help(sub, key + "."))
    return lines


def _archs(*, as_json: bool) -> int:
    from distill.models import STUDENTS

    entries = STUDENTS.describe()
    if as_json:
        print(json.dumps(entries, indent=2, default=str))
        return EXIT_OK
    for entry in entries:
        params = ", ".join(f"{k}={v}" for k, v in entry["params"].items())
        print(f"{entry['name']:<12} {entry['description']}\n{'':<12} {params}")
    return EXIT_OK


def _layers(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Exit 0 with the listing, 2 with an error event (stdout, --json) or message (stderr), 1 on our bug."""
    out = _claim_stdout_for_events()
    try:
        from distill import layers

        input_shape = _shape_option(args.input_shape)
        architecture = _architecture_option(args)
        if args.student is not None:
            listing = layers.student_layers(str(args.student), input_shape=input_shape)
        elif args.checkpoint is not None:
            listing = layers.checkpoint_layers(
                str(args.checkpoint), format=args.format, architecture=architecture, input_shape=input_shape
            )
        elif architecture is None:
            raise UserError(
                "give --architecture NAME, --checkpoint PATH or --student PATH",
                code="invalid_option",
                param="architecture",
            )
        else:
            listing = layers.architecture_layers(architecture, input_shape=input_shape, num_classes=args.num_classes)
    except (UserError, MemoryError) as exc:
        error = exc if isinstance(exc, UserError) else _out_of_memory()
        if args.json:
            JsonLinesEmitter(out)("error", **error.as_dict())
        else:
            print(f"error: {error.message}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception:
        traceback.print_exc(file=sys.stderr)
        if args.json:
            JsonLinesEmitter(out)("error", code="internal_error", message="internal error: see the log", param=None)
        return EXIT_INTERNAL_ERROR
    out.write((json.dumps(listing) if args.json else layers.format_table(listing)) + "\n")
    out.flush()
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    """Exit 0 when the job could run, 2 with its UserError (an error event with --json), 1 on our bug."""
    out = _claim_stdout_for_events()
    try:
        from distill.validate import check_job

        check_job(load_job_file(args.job))
    except (UserError, MemoryError) as exc:
        error = (
            exc
            if isinstance(exc, UserError)
            else UserError(
                "checking the job needs more memory than this process may use (the teacher or the data is too big)",
                code="out_of_memory",
            )
        )
        if args.json:
            JsonLinesEmitter(out)("error", **error.as_dict())
        else:
            print(f"error: {error.message}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception:
        traceback.print_exc(file=sys.stderr)
        return EXIT_INTERNAL_ERROR
    out.write((json.dumps({"ok": True}) if args.json else "ok: the job can run") + "\n")
    out.flush()
    return EXIT_OK


def _out_of_memory() -> UserError:
    return UserError(
        "the network needs more memory than this process may use; list it with a smaller input_shape",
        code="out_of_memory",
        param="input_shape",
    )


def _shape_option(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(d < 1 for d in shape):
        raise UserError(
            f"--input-shape must be positive integers separated by commas, e.g. 1,28,28; got {text!r}",
            code="invalid_option",
            param="input_shape",
        )
    return shape


def _architecture_option(args: argparse.Namespace) -> ArchitectureSpec | None:
    """--architecture-json, or --architecture NAME with --kwargs; None when neither is given."""
    try:
        if args.architecture_json is not None:
            return ArchitectureSpec.model_validate_json(args.architecture_json)
        if args.architecture is None:
            return None
        return ArchitectureSpec.model_validate({"name": args.architecture, "kwargs": json.loads(args.kwargs)})
    except (ValidationError, json.JSONDecodeError) as exc:
        raise UserError(
            f"the architecture is not valid: {' '.join(str(exc).split())[:300]}", code="invalid_kwargs", param="kwargs"
        ) from None


def _run(args: argparse.Namespace) -> int:
    from distill.painter import ForkedPainter

    # Before torch is imported here and before stdout becomes the event stream: see distill/painter.py.
    painter = ForkedPainter.start()
    emit: Emitter = JsonLinesEmitter(_claim_stdout_for_events())
    bar = ProgressBar.maybe(args.progress)
    if bar is not None:
        emit = bar.wrap(emit)
    stop = StopFlag()
    stop.install_sigterm()
    from distill.startup import tune_allocator

    tune_allocator()  # this process trains and exits: keep freed activations for the next batch
    try:
        config = load_job_file(args.job)
        if config.training.optimizer == "sgd":  # torch's SGD imports torch._dynamo; Adam(W) never does
            from distill.startup import prefetch_imports

            prefetch_imports()  # loaded on a thread while the data and teacher load
        from distill.runner import run_job  # imported late: `--help` and config errors stay fast

        run_job(config, out_dir=args.out, device=args.device, emit=emit, stop=stop, resume=args.resume, painter=painter)
        return EXIT_OK
    except UserError as exc:
        emit("error", **exc.as_dict())
        return EXIT_USER_ERROR
    except Cancelled as exc:
        emit("error", code="cancelled", message=str(exc), param=None)
        return EXIT_CANCELLED
    except Exception:
        traceback.print_exc(file=sys.stderr)
        emit("error", code="internal_error", message="internal error: see the log for the traceback", param=None)
        return EXIT_INTERNAL_ERROR
    finally:
        if bar is not None:
            bar.close()


def _claim_stdout_for_events() -> TextIO:
    """Keep the real stdout for events only; anything else that prints (onnxruntime's native notices, a
    library's print) is sent to stderr, so the worker never has to guess which stdout lines are events."""
    sys.stdout.flush()
    events = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return events


def load_job_file(path: Path) -> JobConfig:
    """Parse and validate JOB.json; paths inside it are taken relative to its folder."""
    try:
        raw: Any = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"no such job file: {path}", code="invalid_job", param="job") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON: {exc}", code="invalid_job", param="job") from None
    try:
        config = JobConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"])
        raise UserError(f"{param}: {first['msg']}", code="invalid_job", param=param) from None
    return resolve_paths(config, path.resolve().parent)


def resolve_paths(config: JobConfig, base: Path) -> JobConfig:
    def local(ref: str | None) -> str | None:
        if ref is None or ref.startswith("builtin:"):
            return ref
        return str((base / ref).resolve())

    teacher = None if config.teacher is None else config.teacher.model_copy(update={"path": local(config.teacher.path)})
    dataset = config.dataset.model_copy(
        update={"train": local(config.dataset.train), "validation": local(config.dataset.validation)}
    )
    return config.model_copy(update={"teacher": teacher, "dataset": dataset})
