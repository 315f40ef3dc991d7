"""Sidecar fields that identify a person, a place or a moment, and never reach the tables.

The list is explicit (a test holds it) and matched case-insensitively. It covers what dcm2niix
and other converters copy from DICOM headers: acquisition dates and times, institution and
station, device serial numbers, people's names, IDs and birth dates, and DICOM UIDs.
"""

from __future__ import annotations

__all__ = ["IDENTIFYING_FIELDS", "is_identifying"]

IDENTIFYING_FIELDS: frozenset[str] = frozenset(
    {
        # when
        "AcquisitionDateTime", "AcquisitionDate", "AcquisitionTime", "ContentDate",
        "ContentTime", "SeriesDate", "SeriesTime", "StudyDate", "StudyTime", "InstanceCreationDate",
        "InstanceCreationTime", "DateOfLastCalibration", "TimeOfLastCalibration",
        # where and with what
        "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "StationName",
        "DeviceSerialNumber", "ProcedureStepDescription",
        # who
        "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge",
        "PatientWeight", "PatientSize", "OtherPatientIDs", "ReferringPhysicianName",
        "PerformingPhysicianName", "OperatorsName", "RequestingPhysician", "AccessionNumber",
        # DICOM identifiers
        "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID",
        "StudyID",
    }
)  # fmt: skip

_LOWER = frozenset(name.lower() for name in IDENTIFYING_FIELDS)


def is_identifying(field: str) -> bool:
    return field.lower() in _LOWER
