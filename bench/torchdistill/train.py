"""Train one student with torchdistill 1.1.5's config-driven pipeline; runs in the torchdistill venv.

    python -m bench.torchdistill.train --config run.yaml --seed 0 --result result.json

The flow is the one of torchdistill's example `examples/torchvision/image_classification.py` (which the
pip package does not ship): `set_seed`, `yaml_util.load_yaml_file`, `import_dependencies`, models from
the registry (`get_model`) with `src_ckpt` loaded by `load_ckpt`, `get_distillation_box`, then per epoch
`pre_epoch_process`, `forward_process` + `post_forward_process` per batch, a validation pass,
`save_ckpt`, `post_epoch_process`, and a final test of teacher and student. Two departures, both to match
what the Distillery job does: the student that is tested is the last epoch's (the example reloads the
checkpoint with the best validation accuracy, and validation is the test set here), and a checkpoint is
written every epoch (Distillery checkpoints every epoch too).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from torchdistill.common import yaml_util
from torchdistill.common.main_util import import_dependencies, load_ckpt, save_ckpt, set_seed
from torchdistill.core.distillation import get_distillation_box
from torchdistill.datasets.util import build_data_loader
from torchdistill.misc.log import set_basic_log_config
from torchdistill.models.registry import get_model


def load_model(model_config: dict, device: torch.device) -> torch.nn.Module:
    model = get_model(model_config["key"], None, **model_config["kwargs"])
    load_ckpt(model_config.get("src_ckpt"), model=model, strict=True)
    return model.to(device)


@torch.inference_mode()
def top1(model: torch.nn.Module, loader: torch.utils.data.DataLoader, device: torch.device) -> float:
    model.eval()
    correct, seen = 0, 0
    for x, y in loader:
        correct += int((model(x.to(device)).argmax(dim=1) == y.to(device)).sum())
        seen += len(y)
    return correct / seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--result", required=True, help="where to write the result JSON")
    args = parser.parse_args()
    started = time.perf_counter()
    set_basic_log_config()
    set_seed(args.seed)
    config = yaml_util.load_yaml_file(args.config)
    import_dependencies(config.get("dependencies"))
    device = torch.device(args.device)
    dataset_dict = config["datasets"]
    models_config = config["models"]
    teacher = load_model(models_config["teacher_model"], device)
    student = load_model(models_config["student_model"], device)
    dst_ckpt = models_config["student_model"]["dst_ckpt"]

    box = get_distillation_box(teacher, student, dataset_dict, config["train"], device, None, False, 1)
    val_history = []
    train_started = time.perf_counter()
    for epoch in range(box.num_epochs):
        box.pre_epoch_process(epoch=epoch)
        for sample_batch, targets, supp_dict in box.train_data_loader:
            loss = box.forward_process(sample_batch.to(device), targets.to(device), supp_dict)
            box.post_forward_process(loss=loss)
            if not math.isfinite(loss.item()):
                raise ValueError(f"the loss became {loss.item()} at epoch {epoch + 1}")
        val = top1(student, box.val_data_loader, device)
        val_history.append(val)
        save_ckpt(student, box.optimizer, box.lr_scheduler, val, None, dst_ckpt)
        box.post_epoch_process()
    train_seconds = time.perf_counter() - train_started
    box.clean_modules()

    test_config = config["test"]["test_data_loader"]
    test_loader = build_data_loader(dataset_dict[test_config["dataset_id"]], test_config, False)
    result = {
        "student_top1": top1(student, test_loader, device),
        "teacher_top1": top1(teacher, test_loader, device),
        "val_top1_per_epoch": val_history,
        "train_seconds": round(train_seconds, 2),
        "in_process_seconds": round(time.perf_counter() - started, 2),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "loss": str(box.criterion),
    }
    Path(args.result).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
