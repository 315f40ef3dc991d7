import pickle

import pytest

from openmind_data.errors import (
    ConfigError,
    DownloadError,
    InvalidInputError,
    OpenMindError,
    SchemaError,
    SynthError,
)
from openmind_data.exclusions import ExclusionReason


@pytest.mark.parametrize(
    "error",
    [
        ConfigError("bad option"),
        SchemaError("bad column"),
        SynthError("cannot"),
        DownloadError("ORG/NAME@abc: x.nii.gz: download failed"),
        InvalidInputError("ds1/sub-01/anat/x.nii.gz", ExclusionReason.TRUNCATED, "ends early"),
    ],
)
def test_errors_share_one_base_and_pickle(error: OpenMindError) -> None:
    assert isinstance(error, OpenMindError)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.args == error.args


def test_invalid_input_names_file_and_reason() -> None:
    error = InvalidInputError("a/b.nii.gz", ExclusionReason.ZERO_BYTE, "file is empty")
    copy = pickle.loads(pickle.dumps(error))
    assert copy.path == "a/b.nii.gz"
    assert copy.reason == "zero_byte"
    assert "a/b.nii.gz" in str(copy) and "zero_byte" in str(copy)


def test_config_error_is_also_a_value_error() -> None:
    with pytest.raises(ValueError, match="bad"):
        raise ConfigError("bad")


def test_exclusion_codes_are_unique_strings_with_descriptions() -> None:
    codes = [reason.value for reason in ExclusionReason]
    assert len(codes) == len(set(codes))
    for reason in ExclusionReason:
        assert reason == reason.value  # a StrEnum compares equal to its code
        assert reason.value.islower() and " " not in reason.value
        assert len(reason.description) > 20, reason
    assert ExclusionReason("zero_byte") is ExclusionReason.ZERO_BYTE


def test_every_public_name_of_the_package_resolves() -> None:
    import openmind_data

    for name in openmind_data.__all__:
        assert getattr(openmind_data, name) is not None, name
