import pytest

from openmind_data.modalities import (
    DWI_DERIVED,
    MODALITIES,
    RULES,
    ModalityRule,
    modality_for,
    modality_names,
)


def test_vocabulary_covers_openmind() -> None:
    names = modality_names(published_only=True)
    assert len(names) == len(set(names))
    assert len(names) >= 23
    for required in (
        "T1w",
        "T2w",
        "FLAIR",
        "T1map",
        "T2map",
        "T2starw",
        "T2starmap",
        "PDw",
        "FLASH",
        "MP2RAGE",
        "UNIT1",
        "inplaneT1",
        "inplaneT2",
        "angio",
        "SWI",
        "minIP",
        "ADC",
        "TRACE",
        "MD",
        "FA",
    ):
        assert required in names
    assert "DWI" in modality_names() and "DWI" not in names
    assert set(DWI_DERIVED.values()) <= set(names)


def test_every_rule_names_a_vocabulary_entry() -> None:
    names = {m.name for m in MODALITIES}
    assert {rule.modality for rule in RULES} <= names
    with pytest.raises(ValueError, match="unknown modality"):
        ModalityRule("T9w", "T9w")


@pytest.mark.parametrize(
    ("datatype", "suffix", "entities", "expected"),
    [
        ("anat", "T1w", {"acq": "MPRAGE"}, "T1w"),
        ("anat", "T1w", {}, "T1w"),
        ("anat", "T2w", {"acq": "FLAIR"}, "FLAIR"),
        ("anat", "T2starw", {}, "T2starw"),
        ("anat", "T2star", {}, "T2starw"),
        ("anat", "T2starw", {"acq": "SWI"}, "SWI"),
        ("anat", "T1w", {"acq": "TOF"}, "angio"),
        ("anat", "PD", {}, "PDw"),
        ("anat", "inplaneT2", {}, "inplaneT2"),
        ("anat", "UNIT1", {}, "UNIT1"),
        ("anat", "MP2RAGE", {"inv": "1"}, "MP2RAGE"),
        ("anat", "MP2RAGE", {"inv": "2", "part": "mag"}, "MP2RAGE"),
        ("anat", "MP2RAGE", {}, None),  # no inversion: not one image of the series
        ("dwi", "dwi", {}, "DWI"),
        ("dwi", "dwi", {"acq": "ADC"}, "ADC"),
        ("func", "bold", {"task": "rest"}, None),
        ("fmap", "phasediff", {}, None),
        ("anat", "T1rho", {}, None),
        ("anat", "defacemask", {}, None),
    ],
)
def test_bids_files_map_to_modalities(
    datatype: str, suffix: str, entities: dict[str, str], expected: str | None
) -> None:
    assert modality_for(datatype, suffix, entities) == expected
