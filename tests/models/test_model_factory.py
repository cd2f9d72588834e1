"""Named sizes, parameter counts, config validation."""

from __future__ import annotations

import pytest
from model_batches import NUM_PDFS

from asr_kd.models import (
    ARCHS,
    SIZE_NAMES,
    ModelConfig,
    build_model,
    count_parameters,
    factory,
    parameter_counts,
    parameter_table,
    resolve_hparams,
)

COUNTS = parameter_counts(NUM_PDFS)


@pytest.mark.parametrize("arch", ARCHS)
def test_students_are_at_least_4x_smaller_than_teachers(arch: str) -> None:
    c = COUNTS[arch]
    assert c["teacher"] >= 4 * c["student"], c
    assert c["teacher-xl"] >= 4 * c["student-xl"], c
    assert c["student-small"] < c["student"] < c["teacher"] < c["teacher-large"] < c["teacher-xl"], c


@pytest.mark.parametrize("arch", ARCHS)
def test_cpu_sizes_are_moderate_and_xl_sizes_large(arch: str) -> None:
    c = COUNTS[arch]
    assert 1.5e6 <= c["teacher"] <= 3e6, c
    assert 0.2e6 <= c["student"] <= 0.5e6, c
    assert 20e6 <= c["teacher-xl"] <= 40e6, c


@pytest.mark.parametrize("arch", ARCHS)
def test_meta_counts_equal_counts_of_built_models(arch: str) -> None:
    for size in ("student", "teacher"):
        model = build_model(ModelConfig(arch, size, NUM_PDFS))
        assert count_parameters(model) == COUNTS[arch][size]


def test_every_arch_defines_every_size() -> None:
    for arch, family in factory.FAMILIES.items():
        assert tuple(family.sizes) == SIZE_NAMES, arch


def test_count_parameters_trainable_only() -> None:
    model = build_model(ModelConfig("dnn", "student", NUM_PDFS))
    model.output.requires_grad_(False)
    frozen = model.output.weight.numel() + model.output.bias.numel()
    assert count_parameters(model, trainable_only=True) == count_parameters(model) - frozen


def test_parameter_table_lists_every_arch_and_size() -> None:
    table = parameter_table(NUM_PDFS)
    assert table.splitlines()[0] == "| arch | " + " | ".join(SIZE_NAMES) + " |"
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:]] == list(ARCHS)
    assert f"{COUNTS['dnn']['teacher'] / 1e6:.2f} M" in table


def test_unknown_arch_is_rejected_naming_the_field_and_choices() -> None:
    with pytest.raises(
        ValueError, match=r"model arch must be one of \['dnn', 'tdnn', 'blstm', 'conformer'\], got 'cnn'"
    ):
        build_model(ModelConfig("cnn", "teacher", NUM_PDFS))


def test_unknown_size_is_rejected_naming_the_field_and_choices() -> None:
    with pytest.raises(
        ValueError, match=r"model size must be one of \['student-small', .*'teacher-xl'\].*got 'huge'"
    ):
        build_model(ModelConfig("tdnn", "huge", NUM_PDFS))


def test_overrides_replace_the_named_size() -> None:
    config = ModelConfig("tdnn", "student", NUM_PDFS, overrides={"hidden_dim": 32, "kernel_sizes": [3, 3]})
    config = ModelConfig(**{**config.to_dict(), "overrides": {**config.overrides, "dilations": [1, 2]}})
    hparams = resolve_hparams(config)
    assert (hparams.hidden_dim, hparams.kernel_sizes, hparams.dilations) == (32, (3, 3), (1, 2))
    model = build_model(config)
    assert len(model.convs) == 2 and model.convs[1].dilation == (2,)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"hidden": 32},
            r"model overrides \['hidden'\] are not hyper-parameters of arch 'dnn'; expected \['hidden_dim'",
        ),
        ({"hidden_dim": "32"}, r"overrides\['hidden_dim'\] for arch 'dnn' must be a int like 192, got '32'"),
        ({"num_layers": True}, r"overrides\['num_layers'\] .* got True"),
        ({"norm": "group"}, r"norm must be one of \['batch', 'layer', 'none'\], got 'group'"),
    ],
)
def test_bad_overrides_are_rejected_naming_them(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_model(ModelConfig("dnn", "student", NUM_PDFS, overrides=overrides))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"num_pdfs": 0}, r"model num_pdfs must be an integer >= 1, got 0"),
        ({"feature_dim": 80.0}, r"model feature_dim must be an integer >= 1, got 80.0"),
        ({"dropout": 1.0}, r"model dropout must be a number in \[0, 1\), got 1.0"),
        ({"overrides": [1]}, r"model overrides must be a dict"),
    ],
)
def test_model_config_rejects_bad_values_naming_the_field(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelConfig(**{"arch": "dnn", "size": "student", "num_pdfs": NUM_PDFS, **fields})


def test_model_config_dict_round_trip_and_unknown_keys() -> None:
    config = ModelConfig("blstm", "teacher", NUM_PDFS, dropout=0.2, overrides={"num_layers": 3})
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(
        ValueError, match=r"unknown model config field\(s\) \['layers'\]; expected some of \['arch'"
    ):
        ModelConfig.from_dict({**config.to_dict(), "layers": 3})
    with pytest.raises(ValueError, match=r"lacks required field\(s\) \['num_pdfs'\]"):
        ModelConfig.from_dict({"arch": "dnn", "size": "student"})
