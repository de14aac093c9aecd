"""Search spaces: generic contract over every registered space, then each space's specifics."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from hwnas.arch import Arch
from hwnas.errors import ConfigError, SpaceError
from hwnas.models import count_params, create_model
from hwnas.models.mobilenetv2 import base_channels, channel_names
from hwnas.spaces import SPACES, get_space, list_spaces

NB201_CSV = (
    Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nb201" / "nb201_benchmark.csv"
)
SMALL_INPUT = 64
# Every space hwnas ships, straight from the registry (spaces that other test
# modules register for their own purposes are left to those modules).
SHIPPED = [n for n in list_spaces() if SPACES.factory(n).__module__.startswith("hwnas.")]


def small_space(name: str):
    """The space at a small input size where it allows one, so the tests stay fast."""
    space = get_space(name)
    if space.input_size > SMALL_INPUT:
        space = get_space(name, input_size=SMALL_INPUT)
    return space


# ---- the contract every space keeps -----------------------------------------------------


def test_builtin_spaces_registered():
    assert {"mnasnet", "nb201", "mobilenetv2-channels"} <= set(list_spaces())
    with pytest.raises(ConfigError):
        get_space("no-such-space")


@pytest.mark.parametrize("name", SHIPPED)
def test_sample_build_forward(name):
    space = small_space(name)
    rng = np.random.default_rng(0)
    for _ in range(2):
        arch = space.sample(rng)
        assert arch.space == space.name
        net = space.build(arch).eval()
        with torch.no_grad():
            y = net(space.example_input(batch=2))
        assert y.shape == (2, space.num_classes)
        assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", SHIPPED)
def test_encode_fixed_length(name):
    space = get_space(name)
    rng = np.random.default_rng(1)
    archs = [space.sample(rng) for _ in range(5)]
    enc = space.encode_many(archs)
    assert enc.shape == (5, space.encoding_length)
    assert enc.dtype == np.float32
    # one-hot per decision: as many ones as decisions
    assert (enc.sum(axis=1) == len(space.decisions())).all()
    assert not np.array_equal(enc[0], enc[1])


@pytest.mark.parametrize("name", SHIPPED)
def test_format_parse_round_trip(name):
    space = get_space(name)
    rng = np.random.default_rng(2)
    for _ in range(20):
        arch = space.sample(rng)
        text = space.format(arch)
        assert isinstance(text, str)
        assert space.parse(text) == arch
        assert space.format(space.parse(text)) == text


@pytest.mark.parametrize("name", SHIPPED)
def test_malformed_strings_rejected(name):
    space = get_space(name)
    good = space.format(space.sample(np.random.default_rng(3)))
    for bad in ("", "garbage", good + "|x", good[: len(good) // 2], "#" + good[1:], good + good):
        with pytest.raises(SpaceError):
            space.parse(bad)


@pytest.mark.parametrize("name", SHIPPED)
def test_mutate_changes_one_decision(name):
    space = get_space(name)
    rng = np.random.default_rng(4)
    arch = space.sample(rng)
    for _ in range(10):
        child = space.mutate(arch, rng)
        diff = sum(a != b for a, b in zip(arch.choices, child.choices, strict=True))
        assert diff == 1
        arch = child


@pytest.mark.parametrize("name", SHIPPED)
def test_size_and_shapes(name):
    space = get_space(name)
    assert space.size() == math.prod(space.decisions()) > 1
    assert space.input_shape == (1, 3, space.input_size, space.input_size)
    assert len(space.decision_names()) == len(space.decisions())


@pytest.mark.parametrize("name", SHIPPED)
def test_rejects_foreign_and_out_of_range_archs(name):
    space = get_space(name)
    arch = space.sample(np.random.default_rng(5))
    with pytest.raises(SpaceError):
        space.build(Arch("other-space", arch.choices))
    bad = list(arch.choices)
    bad[0] = space.decisions()[0]
    with pytest.raises(SpaceError):
        space.format(Arch(space.name, tuple(bad)))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name", SHIPPED)
def test_onnx_export_matches_torch(name):
    space = small_space(name)
    net = space.build(space.sample(np.random.default_rng(6))).eval()
    x = space.example_input()
    buf = io.BytesIO()
    torch.onnx.export(net, (x,), buf, dynamo=False, opset_version=17)
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(y, net(x).numpy(), rtol=1e-3, atol=1e-4)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name", SHIPPED)
def test_onnx_dynamo_export_at_default_size(name):
    space = get_space(name)
    net = space.build(space.sample(np.random.default_rng(7))).eval()
    x = space.example_input()
    buf = io.BytesIO()
    torch.onnx.export(net, (x,), dynamo=True, verbose=False).save(buf)
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(y, net(x).numpy(), rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_nb201_through_the_project_exporter(tmp_path):
    """Every NAS-Bench-201 op, through hwnas.export (dynamo exporter + ORT check)."""
    from hwnas.export import to_onnx

    space = get_space("nb201")
    arch = space.parse(
        "|none~0|+|skip_connect~0|nor_conv_1x1~1|+|nor_conv_3x3~0|avg_pool_3x3~1|none~2|"
    )
    torch.manual_seed(0)
    art = to_onnx(space.build(arch), space.input_shape, cache_dir=tmp_path, check=True)
    assert Path(art.path).exists()


# ---- nb201 ------------------------------------------------------------------------------

ALL_CONV3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"


@pytest.fixture(scope="module")
def nb201():
    return get_space("nb201")


def test_nb201_defaults(nb201):
    assert nb201.input_shape == (1, 3, 32, 32)
    assert nb201.num_classes == 10
    assert nb201.size() == 15625
    assert nb201.encoding_length == 30


@pytest.mark.parametrize(
    "cell,num_classes,published",
    [
        # NAS-Bench-201 API get_cost_info(...)['params'] in millions: the all-3x3 cell is the
        # benchmark's largest network on cifar10 / cifar100 / ImageNet16-120 (1.531546,
        # 1.537396, 1.538696), a cell without convolutions its smallest (0.073306), and
        # 0.802426 is NATS-Bench's figure for the cell below (NATS-Bench issue #36).
        (ALL_CONV3, 10, 1.531546),
        (ALL_CONV3, 100, 1.537396),
        (ALL_CONV3, 120, 1.538696),
        ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", 10, 0.073306),
        (
            "|skip_connect~0|+|avg_pool_3x3~0|skip_connect~1|+|none~0|avg_pool_3x3~1|skip_connect~2|",
            10,
            0.073306,
        ),
        (
            "|skip_connect~0|+|none~0|nor_conv_3x3~1|+|avg_pool_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
            10,
            0.802426,
        ),
    ],
)
def test_nb201_published_param_counts(cell, num_classes, published):
    space = get_space("nb201", num_classes=num_classes)
    assert count_params(space.build(space.parse(cell))) == round(published * 1e6)


def test_nb201_index_anchors_without_data(nb201):
    # rows quoted in the benchmark's own generation code and its README example
    assert nb201.format(nb201.from_index(0)) == (
        "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
    )
    assert (
        nb201.index_of(
            "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
        )
        == 1
    )
    assert (
        nb201.index_of("|avg_pool_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|nor_conv_3x3~2|")
        == 9
    )
    idx = [nb201.index_of(nb201.from_index(i)) for i in range(0, 15625, 7)]
    assert idx == list(range(0, 15625, 7))
    for bad in (-1, 15625, 1.0, True):
        with pytest.raises(SpaceError):
            nb201.from_index(bad)


@pytest.mark.skipif(not NB201_CSV.exists(), reason=f"NAS-Bench-201 table not found at {NB201_CSV}")
def test_nb201_index_order_matches_benchmark_csv(nb201):
    with NB201_CSV.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 15625
    for row in rows:
        i = int(row["index"])
        assert nb201.format(nb201.from_index(i)) == row["arch"], f"row {i}"
        assert nb201.index_of(row["arch"]) == i


@pytest.mark.skipif(not NB201_CSV.exists(), reason=f"NAS-Bench-201 table not found at {NB201_CSV}")
def test_nb201_degenerate_cells_are_exactly_the_chance_level_ones(nb201):
    with NB201_CSV.open(newline="") as f:
        rows = list(csv.DictReader(f))
    degenerate = [float(r["cifar10_acc"]) for r in rows if nb201.is_degenerate(r["arch"])]
    healthy = [float(r["cifar10_acc"]) for r in rows if not nb201.is_degenerate(r["arch"])]
    assert len(degenerate) == 341
    assert max(degenerate) <= 10.5  # chance on 10 classes
    assert min(healthy) > 40


def test_nb201_is_degenerate(nb201):
    assert nb201.is_degenerate("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    # node 1 is reached, but nothing leads from it or the input to node 3
    assert nb201.is_degenerate("|skip_connect~0|+|none~0|none~1|+|none~0|none~1|nor_conv_3x3~2|")
    assert not nb201.is_degenerate(
        "|none~0|+|none~0|none~1|+|avg_pool_3x3~0|none~1|none~2|"
    )  # the direct edge suffices
    assert not nb201.is_degenerate(
        "|nor_conv_1x1~0|+|none~0|skip_connect~1|+|none~0|none~1|skip_connect~2|"
    )  # a three-edge path
    # a degenerate cell's output does not depend on the input
    net = nb201.build(nb201.parse("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")).eval()
    with torch.no_grad():
        a, b = net(torch.randn(1, 3, 32, 32)), net(torch.randn(1, 3, 32, 32))
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    "bad,fragment",
    [
        ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|", "3"),
        (ALL_CONV3.replace("nor_conv_3x3~1|+", "conv_5x5~1|+", 1), "unknown NAS-Bench-201 op"),
        (ALL_CONV3.replace("~2|", "~1|"), "must come from node 2"),
        (
            ALL_CONV3.replace("|+|nor_conv_3x3~0|nor_conv_3x3~1|+", "|+|nor_conv_3x3~0|+", 1),
            "2 incoming",
        ),
        (ALL_CONV3.replace("nor_conv_3x3~0", "nor_conv_3x3", 1), "op~input"),
        (ALL_CONV3[1:], "wrapped"),
    ],
)
def test_nb201_parse_errors_name_the_problem(nb201, bad, fragment):
    with pytest.raises(SpaceError, match=fragment):
        nb201.parse(bad)


# ---- mnasnet ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnas():
    return get_space("mnasnet")


def test_mnasnet_space_shape(mnas):
    assert len(mnas.decisions()) == 42
    # the paper's per-block sub-space: 4 ops x 2 kernels x 2 SE x 3 skips x 3 widths x 3 depths
    assert mnas.size() == 432**7 == (4 * 2 * 2 * 3 * 3 * 3) ** 7
    assert mnas.encoding_length == 7 * 17
    assert mnas.input_shape == (1, 3, 224, 224)
    assert get_space("mnasnet", input_size=128).input_shape == (1, 3, 128, 128)
    with pytest.raises(SpaceError, match="32"):
        get_space("mnasnet", input_size=16)


def test_mnasnet_contains_mobilenetv2(mnas):
    arch = mnas.mobilenetv2_arch()
    assert mnas.format(arch).startswith("dwconv_k3_se0_noskip_f1.0_l+0|mbconv6_k3_se0_id_f1.0_l+0|")
    assert count_params(mnas.build(arch)) == count_params(create_model("mobilenetv2")) == 3_504_872
    # 'none' is accepted for the no-skip option; the canonical token is 'noskip'
    assert mnas.parse(mnas.format(arch).replace("_noskip_", "_none_")) == arch


def test_mnasnet_decisions_shape_the_network(mnas):
    text = "|".join(
        [
            "conv_k5_se0.25_id_f1.25_l-1",  # 1 layer (clamped), 20 -> 24 channels
            "dwconv_k3_se0_id_f0.75_l+1",  # 3 layers of 16 channels
            "mbconv3_k5_se0.25_id_f1.0_l+0",
            "mbconv6_k3_se0_noskip_f1.0_l+0",
            "mbconv6_k3_se0_id_f1.0_l-1",
            "mbconv6_k3_se0_id_f1.0_l+0",
            "mbconv6_k3_se0_id_f1.0_l+1",
        ]
    )
    stages = mnas.stages(mnas.parse(text))
    assert [s.layers for s in stages] == [1, 3, 3, 4, 2, 3, 2]
    assert [s.out for s in stages] == [24, 16, 32, 64, 96, 160, 320]
    assert stages[2].expand == 3 and stages[2].kernel == 5 and stages[2].se_ratio == 0.25
    net = mnas.build(mnas.parse(text))
    layers = list(net.blocks)
    assert len(layers) == sum(s.layers for s in stages)
    # identity residuals only where shapes allow, and only where asked
    assert [getattr(m, "use_residual", None) for m in layers[:4]] == [False, False, True, True]
    stage3 = layers[7:11]  # noskip stage
    assert not any(m.use_residual for m in stage3)
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 3, 96, 96)).shape == (1, 1000)


def test_mnasnet_pooling_skip_wraps_every_layer_of_its_blocks(mnas):
    from hwnas.spaces.mnasnet import PoolSkip

    blocks = ["mbconv6_k3_se0_id_f1.0_l+0"] * 7
    blocks[0] = "dwconv_k3_se0_pool_f1.0_l+0"  # 32 -> 16 channels: the shortcut is cut
    blocks[1] = "mbconv3_k5_se0_pool_f1.0_l+0"  # 16 -> 24, stride 2: padded and pooled
    arch = mnas.parse("|".join(blocks))
    assert mnas.format(arch) == "|".join(blocks)
    assert mnas.skips(arch)[:3] == ("pool", "pool", "id")
    net = mnas.build(arch)
    layers = list(net.blocks)
    assert [isinstance(m, PoolSkip) for m in layers[:4]] == [True, True, True, False]
    assert [m.pool.stride for m in layers[:3]] == [1, 2, 1]
    # a pooling skip holds no weights: the same network without it has as many
    plain = mnas.parse("|".join(b.replace("_pool_", "_noskip_") for b in blocks))
    assert count_params(net) == count_params(mnas.build(plain))
    with torch.no_grad():
        for size in (96, 99):  # odd sizes too: the pool strides like the layer
            assert net.eval()(torch.randn(1, 3, size, size)).shape == (1, 1000)
    # the shortcut is what the docstring says: layer(x) + avgpool(x), cut to 16 channels
    first = layers[0].eval()
    x = torch.randn(1, 32, 12, 12)
    pool = torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False)[:, :16]
    with torch.no_grad():
        assert torch.allclose(first(x), first.layer(x) + pool)


@pytest.mark.parametrize(
    "bad,fragment",
    [
        ("mbconv6_k3_se0_id_f1.0_l+0", "7 blocks"),
        ("|".join(["mbconv9_k3_se0_id_f1.0_l+0"] * 7), "op 'mbconv9'"),
        ("|".join(["mbconv6_k7_se0_id_f1.0_l+0"] * 7), "kernel 7"),
        ("|".join(["mbconv6_k3_se0.5_id_f1.0_l+0"] * 7), "SE ratio"),
        ("|".join(["mbconv6_k3_se0_res_f1.0_l+0"] * 7), "skip 'res'"),
        ("|".join(["mbconv6_k3_se0_id_f0.5_l+0"] * 7), "filter ratio"),
        ("|".join(["mbconv6_k3_se0_id_f1.0_l+2"] * 7), "layer delta"),
        ("|".join(["mbconv6-k3-se0-id-f1.0-l+0"] * 7), "malformed"),
    ],
)
def test_mnasnet_parse_errors_name_the_problem(mnas, bad, fragment):
    with pytest.raises(SpaceError, match=fragment):
        mnas.parse(bad)


# ---- mobilenetv2-channels ---------------------------------------------------------------


@pytest.fixture(scope="module")
def chans():
    return get_space("mobilenetv2-channels")


def test_channels_space_layout(chans):
    assert chans.decision_names() == channel_names()
    assert len(chans.decisions()) == 25 and set(chans.decisions()) == {10}
    assert chans.encoding_length == 250
    assert chans.max_channels()[0] == 48 and chans.max_channels()[-1] == 1920  # 1.5x
    assert chans.channels(chans.uniform(0))[-1] == 192  # 0.15x of 1280
    # MobileNetV2 1.0 as a width list builds the reference network exactly
    assert count_params(chans.build_from_channels(base_channels())) == 3_504_872
    wide = count_params(chans.build(chans.uniform(9)))
    narrow = count_params(chans.build(chans.uniform(0)))
    assert narrow < 3_504_872 < wide


def test_channels_round_trip_through_width_lists(chans):
    arch = chans.sample(np.random.default_rng(8))
    ch = chans.channels(arch)
    assert all(c % 8 == 0 and c >= 8 for c in ch)
    net = chans.build(arch)
    assert net.config.to_channels() == ch
    with pytest.raises(SpaceError, match="25 entries"):
        chans.build_from_channels(ch[:-1])
    with pytest.raises(SpaceError, match="positive int"):
        chans.build_from_channels([0] + ch[1:])


def test_slimmable_network_slices_equal_standalone_subnets(chans):
    torch.manual_seed(0)
    slim = chans.build_slimmable()
    for m in slim.modules():  # non-trivial BN statistics, so a wrong slice would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_()
    slim.eval()
    x = torch.randn(2, 3, 64, 64)
    arch = chans.sample(np.random.default_rng(9))
    slim.set_channels(chans.channels(arch))
    with torch.no_grad():
        sliced = slim(x)
        standalone = slim.subnet()(x)
    torch.testing.assert_close(sliced, standalone)
    assert count_params(slim.subnet()) == count_params(chans.build(arch))
    # gradients of a slice land in the shared weights, and only in the slice
    slim.train()
    slim(x).sum().backward()
    stem_grad = slim.net.stem[0].weight.grad
    c = chans.channels(arch)[0]
    assert stem_grad[:c].abs().sum() > 0 and stem_grad[c:].abs().sum() == 0
    too_wide = chans.max_channels()
    too_wide[3] += 8
    with pytest.raises(SpaceError, match="exceeds"):
        slim.set_channels(too_wide)


@pytest.mark.parametrize(
    "bad,fragment",
    [
        ("-".join(["1.05"] * 24), "25 '-'-separated"),
        ("-".join(["1.05"] * 24 + ["0.50"]), "not on the grid"),
        ("-".join(["1.05"] * 24 + ["abc"]), "not a number"),
    ],
)
def test_channels_parse_errors_name_the_problem(chans, bad, fragment):
    with pytest.raises(SpaceError, match=fragment):
        chans.parse(bad)


# ---- CLI --------------------------------------------------------------------------------


def test_cli_spaces(capsys):
    import json

    from hwnas.cli import main

    assert main(["spaces", "--json"]) == 0
    listed = {r["space"]: r for r in json.loads(capsys.readouterr().out)}
    assert listed["nb201"]["size"] == 15625 and listed["nb201"]["encoding_length"] == 30
    assert main(["spaces", "show", "nb201", "1", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["benchmark_index"] == 1 and row["params"] == 802_426
    assert main(["spaces", "sample", "mnasnet", "-n", "2", "--input-size", "96", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2 and all(r["input_shape"] == [1, 3, 96, 96] for r in rows)
    assert main(["spaces", "show", "mnasnet", "not-an-arch"]) == 2
    assert "7 blocks" in capsys.readouterr().err
