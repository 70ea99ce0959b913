"""Feature and relation knowledge, taps, and every mode, on real tiny conv nets trained on the CPU.

What must hold (issue #6): taps capture exactly the named modules; adapters and second networks train, are in
the checkpoint and resume exactly; the exported student is the bare student; every mode runs and reports;
progress covers the whole job; unknown layers and unfixable shapes are clear user errors.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from distill.config import ArchitectureSpec
from distill.errors import Cancelled, UserError
from distill.events import ListEmitter
from distill.models import build_model
from distill.models.taps import Taps, list_layers
from distill.runner import run_job
from distill.training.checkpoint import load_checkpoint
from distill.validate import check_job
from tests.engine.digits_job import (
    CONV_STUDENT_ARCH,
    CONV_TEACHER_ARCH,
    conv_job_config,
    make_conv_teacher,
    make_digits_files,
)
from tests.engine.test_training import StopAtCheck, assert_same_weights, weights

FITNET_KD = {
    "terms": [
        {"type": "response", "temperature": 4.0},
        {"type": "feature", "method": "fitnet", "hint_epochs": 1},
    ]
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("conv")
    paths = make_digits_files(folder)
    paths["conv_teacher"] = make_conv_teacher(folder, paths)
    return paths


def conv(files: dict[str, Path], **overrides: object):  # type: ignore[no-untyped-def]
    return conv_job_config(files, files["conv_teacher"], **overrides)


def student_net() -> nn.Module:
    torch.manual_seed(0)
    return build_model(ArchitectureSpec(**CONV_STUDENT_ARCH), input_shape=(1, 8, 8), num_classes=10)


# --- taps -------------------------------------------------------------------------------------------------------


def test_taps_capture_exactly_the_named_modules_nested_ones_included() -> None:
    model = student_net().eval()
    x = torch.randn(3, 1, 8, 8)
    taps = Taps(model, ["features.block1", "features.block2.0", "embedding"])
    out = taps(x)
    assert list(out.features) == ["features.block1", "features.block2.0", "embedding"]
    with torch.no_grad():
        block1 = model.features.block1(x)
        conv2 = model.features.block2[0](block1)
        assert torch.allclose(out.features["features.block1"], block1)
        assert torch.allclose(out.features["features.block2.0"], conv2)  # a nested conv, before its BN
        assert torch.allclose(out.logits, model(x))
    taps.remove()
    assert all(not m._forward_hooks for m in model.modules())


def test_list_layers_gives_paths_and_shapes_in_call_order() -> None:
    layers = {e["path"]: e for e in list_layers(student_net(), (1, 8, 8))}
    assert layers["features.block1"]["shape"] == [8, 4, 4] and layers["features.block1"]["type"] == "Sequential"
    assert layers["features.block2"]["shape"] == [16, 2, 2]
    assert layers["fc"]["shape"] == [10]
    assert list(layers).index("features.block1") < list(layers).index("fc")


def test_unknown_layer_names_the_field_and_the_closest_paths(files: dict[str, Path]) -> None:
    knowledge = {
        "terms": [
            {
                "type": "feature",
                "method": "fitnet",
                "layers": [{"teacher": "features.blok2", "student": "features.block2"}],
            }
        ]
    }
    with pytest.raises(UserError) as caught:
        check_job(conv(files, knowledge=knowledge))
    assert caught.value.code == "unknown_layer"
    assert caught.value.param == "knowledge.terms[0].layers[0].teacher"
    assert "features.block2" in caught.value.message


def test_a_shape_no_adapter_can_fix_names_both_shapes(files: dict[str, Path]) -> None:
    knowledge = {
        "terms": [
            {"type": "feature", "method": "fitnet", "layers": [{"teacher": "features.block2", "student": "embedding"}]}
        ]
    }
    with pytest.raises(UserError) as caught:
        check_job(conv(files, knowledge=knowledge))
    assert caught.value.code == "shape_mismatch"
    assert "32, 2, 2" in caught.value.message and "(32,)" in caught.value.message


# --- adapters train, are checkpointed, resume exactly; export is the bare student --------------------------------


def test_fitnet_adapters_train_and_resume_exactly_through_the_hint_stage(
    files: dict[str, Path], tmp_path: Path
) -> None:
    config = conv(files, knowledge=FITNET_KD)
    straight = ListEmitter()
    run_job(config, out_dir=tmp_path / "straight", emit=straight)
    hint = load_checkpoint(tmp_path / "straight" / "checkpoint-hint.pt")["model"]
    final = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")["model"]
    adapter = "loss.modules_by_name.fitnet.adapters.0.weight"
    assert adapter in hint and adapter in final
    assert not torch.equal(hint[adapter], final[adapter])  # the adapter kept training in the main phase
    phases = [p["phase"] for p in straight.of_type("progress")]
    assert phases[0] == "hint" and phases[-1] == "train"
    fractions = [p["fraction"] for p in straight.of_type("progress")]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0

    # Stop in the main phase's first epoch (13 steps per epoch: 1 + 14 checks for the hint stage), then resume.
    with pytest.raises(Cancelled):
        run_job(config, out_dir=tmp_path / "resumed", stop=StopAtCheck(20))
    run_job(config, out_dir=tmp_path / "resumed", resume=True)
    assert_same_weights(weights(tmp_path / "straight"), weights(tmp_path / "resumed"))
    a = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["model"]
    assert torch.equal(a[adapter], b[adapter])

    exported = load_file(str(tmp_path / "straight" / "student.safetensors"))
    assert set(exported) == set(student_net().state_dict())  # no adapter, head or teacher in student.*


@pytest.mark.parametrize(
    "knowledge",
    [
        {"terms": [{"type": "feature", "method": "attention", "weight": 100.0}]},
        {"terms": [{"type": "relation", "method": "rkd"}]},
        {"terms": [{"type": "relation", "method": "sp", "weight": 10.0}]},
        {"terms": [{"type": "relation", "method": "fsp", "weight": 10.0}]},
    ],
    ids=["attention", "rkd", "sp", "fsp"],
)
def test_each_knowledge_type_trains_and_logs_its_own_curve(
    files: dict[str, Path], tmp_path: Path, knowledge: dict
) -> None:
    events = ListEmitter()
    report = run_job(conv(files, knowledge=knowledge, training={"epochs": 3}), out_dir=tmp_path, emit=events)
    method = knowledge["terms"][0]["method"]
    first, last = (m["values"] for m in (events.of_type("metrics")[0], events.of_type("metrics")[-1]))
    assert f"train/{method}" in last and "train/hard" in last
    assert last[f"train/{method}"] < first[f"train/{method}"]  # the student learns what the term asks
    assert report["student"]["top1"] > 0.2  # above chance (0.1) after 3 short epochs
    assert any("paired automatically" in e["message"] for e in events.of_type("message"))
    assert report["settings"]["teacher_cached"] is True


def test_feature_maps_over_the_cache_budget_make_the_teacher_run_live(files: dict[str, Path], tmp_path: Path) -> None:
    events = ListEmitter()
    config = conv(files, knowledge=FITNET_KD, training={"epochs": 2, "feature_cache_mb": 0})
    report = run_job(config, out_dir=tmp_path, emit=events)
    assert report["settings"]["teacher_cached"] is False
    assert any(
        "teacher runs live" in e["message"] and "cache budget" in e["message"] for e in events.of_type("message")
    )


# --- modes -------------------------------------------------------------------------------------------------------


def test_online_mode_trains_both_networks_exports_both_and_resumes_exactly(
    files: dict[str, Path], tmp_path: Path
) -> None:
    config = conv(files, mode="online")
    report = run_job(config, out_dir=tmp_path / "straight")
    out = tmp_path / "straight"
    assert {"teacher.safetensors", "teacher.pt", "teacher.onnx", "student.safetensors"} <= {
        p.name for p in out.iterdir()
    }
    teacher_after = load_file(str(out / "teacher.safetensors"))
    teacher_before = load_file(str(files["conv_teacher"]))
    assert not torch.equal(teacher_after["fc.weight"], teacher_before["fc.weight"])  # the teacher learned too
    assert (
        report["teacher"]["trained"] is True and "top1" in report["teacher"] and "before_training" in report["teacher"]
    )

    with pytest.raises(Cancelled):
        run_job(config, out_dir=tmp_path / "resumed", stop=StopAtCheck(18))
    run_job(config, out_dir=tmp_path / "resumed", resume=True)
    assert_same_weights(weights(out), weights(tmp_path / "resumed"))
    assert_same_weights(teacher_after, load_file(str(tmp_path / "resumed" / "teacher.safetensors")))


def test_online_teacher_from_scratch(files: dict[str, Path], tmp_path: Path) -> None:
    config = conv(files, mode="online", teacher={"init": "scratch", "path": None, "architecture": CONV_TEACHER_ARCH})
    report = run_job(config, out_dir=tmp_path)
    assert report["teacher"]["init"] == "scratch" and report["teacher"]["top1"] > 0.2
    assert report["student"]["top1"] > 0.2


def test_self_heads_trains_auxiliary_heads_and_exports_without_them(files: dict[str, Path], tmp_path: Path) -> None:
    events = ListEmitter()
    report = run_job(conv(files, mode="self", teacher=None, self={"method": "heads"}), out_dir=tmp_path, emit=events)
    assert report["teacher"] is None and report["compression_ratio"] is None
    assert report["heads"][0]["layer"] == "features.block1" and report["heads"][0]["top1"] > 0.1
    assert {"train/head1_soft", "train/head1_hard", "train/hard"} <= set(events.of_type("metrics")[-1]["values"])
    assert set(load_file(str(tmp_path / "student.safetensors"))) == set(student_net().state_dict())


def test_born_again_reports_every_generation_and_progress_never_goes_back(
    files: dict[str, Path], tmp_path: Path
) -> None:
    events = ListEmitter()
    config = conv(
        files, mode="self", teacher=None, self={"method": "born_again", "generations": 3}, training={"epochs": 4}
    )
    report = run_job(config, out_dir=tmp_path, emit=events)
    assert [g["generation"] for g in report["generations"]] == [1, 2, 3]
    assert all(g["top1"] > 0.3 for g in report["generations"])  # chance is 0.1
    assert report["generations"][-1]["top1"] == pytest.approx(report["student"]["top1"])
    progress = events.of_type("progress")
    assert [p["phase"] for p in progress][-1] == "train" and progress[0]["phase"] == "generation1"
    fractions = [p["fraction"] for p in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert progress[-1]["steps"] == 3 * 4 * 13  # three generations of 4 epochs × 13 steps, counted as one job


def test_modes_refuse_what_they_cannot_use(files: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="mode 'self' has no teacher"):
        conv(files, mode="self")
    with pytest.raises(ValueError, match="only response terms"):
        conv(files, mode="online", knowledge=FITNET_KD)
    with pytest.raises(ValueError, match="only for mode 'online'"):
        conv(files, teacher={"init": "scratch", "path": None, "architecture": CONV_TEACHER_ARCH})
