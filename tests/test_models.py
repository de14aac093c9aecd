"""The model zoo: registry lookups, published parameter counts, forward, ONNX export."""

from __future__ import annotations

import io

import numpy as np
import onnxruntime as ort
import pytest
import torch

from hwnas.errors import ConfigError
from hwnas.models import (
    count_params,
    create_model,
    is_model,
    list_models,
    model_input_shape,
)

# Published parameter counts at 1000 classes: torchvision's mobilenet_v2 (3,504,872)
# and resnet18 (11,689,512); timm's semnasnet_100 = MnasNet-A1 with SE (3,887,038).
PUBLISHED_PARAMS = {"mobilenetv2": 3.50e6, "mnasnet_a1": 3.89e6, "resnet18": 11.69e6}
SMALL = "cifar_resnet20"


def test_registry_lookups():
    names = list_models()
    assert names == sorted(names)
    for required in ("mobilenetv2", "mnasnet_a1", "resnet18", SMALL):
        assert required in names and is_model(required)
    assert not is_model("no_such_net")
    with pytest.raises(ConfigError, match="resnet18"):
        create_model("resnet19")  # the message suggests the close match


def test_none_kwargs_are_dropped():
    m = create_model(SMALL, num_classes=None)
    assert m.head.fc.out_features == 10
    assert create_model(SMALL, num_classes=7).head.fc.out_features == 7


@pytest.mark.parametrize("name,expected", sorted(PUBLISHED_PARAMS.items()))
def test_published_param_counts(name, expected):
    n = count_params(create_model(name, num_classes=1000))
    assert abs(n - expected) / expected < 0.01, f"{name}: {n} params, published {expected:.0f}"


# The exact counts of the reference implementations at 1000 classes (torchvision's
# model cards; timm for MnasNet-A1 = semnasnet_100; MobileNetV1 1.0 is Keras'
# applications.MobileNet trainable count, whose 1x1-conv classifier has the same
# parameters as our FC). Exact figures catch e.g. SE sized from the wrong width.
EXACT_PARAMS = {
    "mobilenetv2": 3_504_872,
    "mnasnet_a1": 3_887_038,
    "resnet18": 11_689_512,
    "cifar_resnet20": 272_474,
    "resnet50": 25_557_032,
    "densenet121": 7_978_856,
    "shufflenetv2": 2_278_604,
    "squeezenet1_1": 1_235_496,
    "googlenet": 6_624_904,
    "efficientnet_b0": 5_288_548,
    "mobilenetv3_large": 5_483_032,
    "mobilenetv3_small": 2_542_856,
    "regnetx_400mf": 5_495_976,
    "mobilenetv1": 4_231_976,
}


@pytest.mark.parametrize("name", sorted(EXACT_PARAMS))
def test_exact_param_counts(name):
    assert count_params(create_model(name)) == EXACT_PARAMS[name]


def test_every_zoo_model_has_a_published_count_and_a_family():
    from hwnas.models import model_info

    untested = set(list_models()) - set(EXACT_PARAMS) - {"mobilenetv2_050"}
    assert not untested, f"add the published parameter count of {sorted(untested)}"
    assert all(model_info(n).family for n in list_models())
    demo = list_models(demo=True)
    assert demo and set(demo) < set(list_models()) and len(demo) <= 6  # `make demo` stays short


@pytest.mark.parametrize("name", list_models())
def test_forward_pass(name):
    shape = model_input_shape(name, batch=2)
    assert shape[:2] == (2, 3)
    # the big nets are fully convolutional: a smaller input keeps the test fast
    if shape[-1] > 64:
        shape = (2, 3, 64, 64)
    m = create_model(name, num_classes=5).eval()
    with torch.no_grad():
        y = m(torch.randn(shape))
    assert y.shape == (2, 5)
    assert torch.isfinite(y).all()


def test_input_shapes():
    assert model_input_shape("mobilenetv2") == (1, 3, 224, 224)
    assert model_input_shape(SMALL) == (1, 3, 32, 32)
    with pytest.raises(ConfigError):
        model_input_shape("nope")


def _export_and_compare(name: str, dynamo: bool, input_shape=None) -> None:
    torch.manual_seed(0)  # the same weights and input on every run
    m = create_model(name).eval()
    x = torch.randn(input_shape or model_input_shape(name))
    buf = io.BytesIO()
    if dynamo:
        prog = torch.onnx.export(m, (x,), dynamo=True, verbose=False)
        prog.save(buf)
    else:
        torch.onnx.export(m, (x,), buf, dynamo=False, opset_version=17)
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        ref = m(x).numpy()
    # Untrained deep nets (DenseNet-121) reach logits of ~1e6, where float32 summation order
    # alone moves a logit near zero by more than 0.1% of itself: judge the absolute error
    # against the output's own scale.
    scale = max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(y, ref, rtol=1e-3, atol=1e-4 * scale)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("dynamo", [False, True])
def test_small_model_exports_to_onnx(dynamo):
    _export_and_compare(SMALL, dynamo)


# A fast export smoke test of a new family at a small input (fully convolutional
# nets accept it); the full-size export of every zoo model is the slow test below.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name", ["squeezenet1_1"])
def test_new_families_export_to_onnx_at_small_input(name):
    _export_and_compare(name, False, (1, 3, 64, 64))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("dynamo", [False, True])
def test_every_model_exports_to_onnx(name, dynamo):
    _export_and_compare(name, dynamo)
