"""Matrix expansion, filters, ids, profile validation and skip reasons (no GPU, no model builds)."""

from __future__ import annotations

import pytest

from detbench.bench.core import matrix
from detbench.bench.core.matrix import Capabilities, MatrixError, MatrixFilters
from detbench.bench.core.ratios import eager_twin
from detbench.bench.core.schema import Cell
from detbench.bench.models import list_models

MODELS = list_models()
CPU = Capabilities(cuda_available=False)
H100 = Capabilities(cuda_available=True, gpu_count=1, bf16_supported=True, device_name="NVIDIA H100 80GB HBM3")


def ids(cells):
    return [c.id for c in cells]


def test_smoke_profile_is_small_fp32_eager_and_has_both_modes():
    cells = matrix.expand("smoke", MatrixFilters(), MODELS)
    assert 3 <= len(cells) <= 6
    assert {c.mode for c in cells} == {"infer", "train"}
    assert {(c.precision, c.compile) for c in cells} == {("fp32", "eager")}
    assert all(c.batch_size <= 2 and c.image_size and max(c.image_size) <= 320 for c in cells)
    assert all(matrix.skip_reason(c, CPU) is None for c in cells)


def test_quick_profile_covers_every_detector_at_two_batch_sizes_and_precisions_with_a_sweep():
    cells = matrix.expand("quick", MatrixFilters(), MODELS)
    assert len(cells) >= 45 and len(ids(cells)) == len(set(ids(cells)))
    for model in matrix.TORCHVISION_DETECTORS:
        for precision in ("fp32", "amp-bf16"):
            for batch in (1, 8):
                assert Cell(model, "infer", "eager", precision, batch).id in ids(cells)
    compiled = {c.model for c in cells if c.compiled}
    assert compiled == {"retinanet_resnet50_fpn", "fcos_resnet50_fpn", "fasterrcnn_resnet50_fpn"}  # ~55 s each
    sweeps = [m for m in {c.model for c in cells}
              if {c.batch_size for c in cells if c.model == m and c.precision == "fp32"} == {1, 2, 4, 8, 16}]
    assert len(sweeps) == 2
    assert {"infer", "train"} == {c.mode for c in cells} and {c.gpus for c in cells} == {1}
    assert len({c.group_key for c in cells}) == len(matrix.TORCHVISION_DETECTORS)  # one worker per detector


def test_quick_profile_on_a_multi_gpu_machine_adds_every_visible_count_and_the_1_gpu_twins():
    cells = matrix.expand("quick", MatrixFilters(), MODELS, gpu_count=4)
    assert {c.gpus for c in cells} == {1, 2, 4}
    assert matrix.visible_counts(6) == (1, 2, 4, 6) and matrix.visible_counts(1) == (1,)
    wanted = matrix.expand("smoke", MatrixFilters(models=("resnet50",), gpus=(2,)), MODELS)
    with_twins, added = matrix.add_gpu_twins(wanted)
    assert {c.gpus for c in wanted} == {2} and {c.gpus for c in with_twins} == {1, 2}
    assert all("1-GPU twin" in why for why in added.values()) and len(added) == len(wanted)


def test_full_profile_is_the_whole_product():
    cells = matrix.expand("full", MatrixFilters(), MODELS)
    assert len(cells) == len(MODELS) * 2 * 2 * 3 * 5


def test_compiled_cells_come_after_their_eager_twin():
    cells = matrix.expand("full", MatrixFilters(models=("ssd300_vgg16",)), MODELS)
    position = {c.id: i for i, c in enumerate(cells)}
    for cell in cells:
        if cell.compiled:
            assert position[eager_twin(cell).id] < position[cell.id]


def test_filters_replace_axes_and_keep_only_named_models():
    filters = MatrixFilters(models=("retinanet_resnet50_fpn",), modes=("infer",), precisions=("amp-fp16",),
                            compile="eager", batch_sizes=(1, 4), image_size=(480, 640))
    assert ids(matrix.expand("quick", filters, MODELS)) == [
        "retinanet_resnet50_fpn-infer-eager-fp16-bs1-gpu1-480x640",
        "retinanet_resnet50_fpn-infer-eager-fp16-bs4-gpu1-480x640",
    ]


def test_a_model_outside_the_profile_still_gets_cells():
    cells = matrix.expand("smoke", MatrixFilters(models=("efficientnet_b3",)), MODELS)
    assert cells and {c.model for c in cells} == {"efficientnet_b3"}


def test_cell_id_matches_the_documented_form():
    cell = Cell("retinanet_resnet50_fpn", "infer", "compiled", "amp-bf16", 8, 1)
    assert cell.id == "retinanet_resnet50_fpn-infer-compiled-bf16-bs8-gpu1"


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: matrix.resolve_profile("huge", True), ["profile 'huge'", "auto, smoke, quick, full, tune"]),
        (lambda: MatrixFilters(modes=("eval",)), ["mode 'eval'", "infer, train"]),
        (lambda: MatrixFilters(precisions=("fp8",)), ["precision 'fp8'", "fp32, amp-fp16, amp-bf16"]),
        (lambda: MatrixFilters(compile="jit"), ["compile mode 'jit'", "eager, default, max-autotune, reduce-overhead, "
                                                "max-autotune-no-cudagraphs, compiled, both"]),
        (lambda: matrix.parse_compile("eager,cudagraphs"), ["compile mode 'cudagraphs'", "reduce-overhead"]),
        (lambda: matrix.parse_compile("compiled", compiled_as="jit"), ["compile mode 'jit'", "max-autotune"]),
        (lambda: matrix.parse_memory_formats("nhwc"), ["memory format 'nhwc'", "contiguous, channels_last"]),
        (lambda: matrix.parse_batch_sizes("8,maximum"), ["batch size 'maximum'", "max (the largest that fits)"]),
        (lambda: matrix.parse_batch_sizes("1,0"), ["batch size '0'"]),
        (lambda: matrix.parse_batch_sizes("two"), ["batch size 'two'"]),
        (lambda: matrix.parse_image_size("640"), ["image size '640'", "HEIGHTxWIDTH"]),
        (lambda: matrix.parse_image_size("9000x9000"), ["image size '9000x9000'", "32..8192"]),
        (lambda: matrix.parse_gpus("1,0"), ["GPU count '0'", "--gpus 1,2,4"]),
        (lambda: matrix.expand("smoke", MatrixFilters(models=("yolo",)), MODELS), ["model 'yolo'", "resnet50"]),
    ],
)
def test_bad_input_is_one_line_naming_valid_choices(make, words):
    with pytest.raises(MatrixError) as info:
        make()
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_auto_profile_follows_cuda():
    assert matrix.resolve_profile("auto", cuda_available=False) == "smoke"
    assert matrix.resolve_profile("auto", cuda_available=True) == "quick"


@pytest.mark.parametrize(
    "cell, caps, expected",
    [
        (Cell("resnet50", precision="amp-bf16"), CPU, "GPU-only"),
        (Cell("resnet50", precision="amp-fp16"), CPU, "GPU-only"),
        (Cell("resnet50", gpus=2), H100, "needs 2 GPUs, 1 visible"),
        (Cell("resnet50", gpus=2), CPU, None),  # detbench.bench.distributed runs the ranks over gloo
        (Cell("resnet50", precision="amp-bf16"),
         Capabilities(cuda_available=True, gpu_count=1, bf16_supported=False, device_name="Tesla T4"),
         "bf16 is not supported on Tesla T4"),
        (Cell("resnet50", compile="compiled"), Capabilities(cuda_available=False, compile_available=False),
         "torch.compile is not available"),
        (Cell("resnet50", precision="amp-bf16", compile="compiled"), H100, None),
    ],
)
def test_skip_reasons(cell, caps, expected):
    reason = matrix.skip_reason(cell, caps)
    if expected is None:
        assert reason is None
    else:
        assert expected in reason


def test_compile_modes_parse_with_version_1_words_kept():
    assert matrix.parse_compile("eager,default,reduce-overhead") == ("eager", "default", "reduce-overhead")
    assert matrix.parse_compile("both") == ("eager", "default") and matrix.parse_compile("compiled") == ("default",)
    assert matrix.parse_compile("compiled,eager", compiled_as="max-autotune") == ("max-autotune", "eager")
    assert MatrixFilters(compile="both").compile == ("eager", "default")
    assert matrix.parse_batch_sizes("1,8,max,8") == (1, 8, "max")


def test_the_memory_format_axis_adds_channels_last_cells_and_keeps_contiguous_ids():
    filters = MatrixFilters(models=("retinanet_resnet50_fpn",), precisions=("amp-bf16",), batch_sizes=(8,),
                            compile=("eager", "default"), memory_formats=("contiguous", "channels_last"))
    assert ids(matrix.expand("quick", filters, MODELS)) == [
        "retinanet_resnet50_fpn-infer-eager-bf16-bs8-gpu1",
        "retinanet_resnet50_fpn-infer-compiled-bf16-bs8-gpu1",
        "retinanet_resnet50_fpn-infer-eager-bf16-channels_last-bs8-gpu1",
        "retinanet_resnet50_fpn-infer-compiled-bf16-channels_last-bs8-gpu1",
    ]


def test_the_tune_profile_searches_each_model_in_one_group_with_the_batch_search_last():
    cells = matrix.expand("tune", MatrixFilters(), MODELS)
    assert {c.model for c in cells} == set(matrix.TUNE_MODELS) and len(cells) == 8 * len(matrix.TUNE_MODELS)
    retina = [c for c in cells if c.model == "retinanet_resnet50_fpn"]
    assert {c.group_key for c in retina} == {("retinanet_resnet50_fpn", None, 1)}
    assert {c.mode for c in retina} == {"infer"}
    assert sorted(c.configuration for c in retina if c.batch_size == 8) == [
        "compiled-reduce-overhead/amp-bf16/channels_last", "compiled/amp-bf16", "compiled/amp-bf16/channels_last",
        "eager/amp-bf16", "eager/amp-bf16/channels_last", "eager/fp32", "eager/fp32/channels_last"]
    assert retina[-1].searches_batch and retina[-1].configuration == "eager/amp-bf16/channels_last"
    # three compiles per model: the ~9-minute budget of docs/bench.md
    assert sum(c.compiled for c in retina) == 3 and not any(c.compile.startswith("max-autotune") for c in cells)
    # a model tune does not list gets every block of it
    yolo = matrix.expand("tune", MatrixFilters(models=("yolov8s",)), MODELS)
    assert sorted(c.configuration for c in yolo) == sorted(c.configuration for c in retina)


@pytest.mark.parametrize("cell, expected", [
    (Cell("resnet50", compile="reduce-overhead"), "captures CUDA graphs: GPU-only"),
    (Cell("resnet50", compile="max-autotune-no-cudagraphs"), None),
    (Cell("resnet50", batch_size="max", gpus=2), "batch search (max) runs on 1 GPU"),
])
def test_skip_reasons_for_the_new_axes(cell, expected):
    reason = matrix.skip_reason(cell, CPU)
    assert reason == expected if expected is None else expected in reason
