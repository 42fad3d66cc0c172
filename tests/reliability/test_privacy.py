"""Synthetic and restored DICOM carry none of the source's patient-identifying attributes.

The source series gets a distinct value in every attribute of the DICOM basic application-level
confidentiality profile (PS3.15 Table E.1-1) that this list names and that takes text; the outputs
of ``augment --format dicom`` and ``denoise`` must not contain any of those values, anywhere in
their bytes.
"""

from __future__ import annotations

import pydicom
import pytest
from pydicom.datadict import dictionary_VR

from tests.cli.test_cli import run
from tests.conftest import SeriesSpec, write_series
from tests.synthesis.test_augment import train_tiny

#: attributes of the basic profile (PS3.15 E.1-1) with text values (dates, times, names, IDs, descriptions)
PROFILE = ["AccessionNumber", "AcquisitionDate", "AcquisitionDateTime", "AcquisitionTime", "AdditionalPatientHistory",
           "AdmissionID", "AdmittingDiagnosesDescription", "BranchOfService", "ContentCreatorName", "ContentDate",
           "ContentTime", "CountryOfResidence", "DerivationDescription", "DeviceSerialNumber", "EthnicGroup",
           "ImageComments", "InstitutionAddress", "InstitutionName", "InstitutionalDepartmentName",
           "IssuerOfPatientID", "MedicalRecordLocator", "MilitaryRank", "NameOfPhysiciansReadingStudy", "Occupation",
           "OperatorsName", "OtherPatientIDs", "OtherPatientNames", "PatientAddress", "PatientAge",
           "PatientBirthDate", "PatientBirthName", "PatientBirthTime", "PatientComments", "PatientID",
           "PatientMotherBirthName", "PatientName", "PatientSex", "PatientSize", "PatientTelephoneNumbers",
           "PatientWeight", "PerformedProcedureStepDescription", "PerformedProcedureStepID",
           "PerformingPhysicianName", "PhysiciansOfRecord", "ProtocolName", "ReferringPhysicianName",
           "RegionOfResidence", "RequestingPhysician", "RequestedProcedureDescription", "ResponsiblePerson",
           "ScheduledProcedureStepDescription", "SeriesDate", "SeriesTime", "StationName", "StudyDate",
           "StudyDescription", "StudyID", "StudyTime", "SeriesDescription"]
#: values by VR: distinct, and long enough not to occur by chance
VALUES = {"PN": "Zebedee^Quux{}", "DA": "1931{:02d}17", "TM": "0317{:02d}", "DT": "1931031703{:02d}00",
          "AS": "0{:02d}Y", "DS": "77.{}3", "CS": "QX{}", "IS": "9173{}"}


def identifying_source(folder):
    write_series(folder, SeriesSpec(rows=24, columns=20, slices=4, description="placeholder"))
    planted = {}
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path)
        for k, keyword in enumerate(PROFILE):
            vr = dictionary_VR(keyword)
            value = VALUES.get(vr, "Secret-{}-Token").format(k)
            setattr(ds, keyword, value)
            planted[keyword] = str(getattr(ds, keyword))
        ds.save_as(path)
    return planted


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("privacy")
    planted = identifying_source(root / "source" / "series")
    generate, denoise = train_tiny(root, num_classes=0), train_tiny(root, "denoise")
    assert run("augment", root / "source", root / "augmented", "--model", generate, "--format", "dicom",
               "--steps", 2, "--device", "cpu").exit_code == 0
    assert run("denoise", root / "source", root / "denoised", "--model", denoise, "--steps", 2,
               "--device", "cpu").exit_code == 0
    return planted, root


@pytest.mark.parametrize("kind", ["augmented", "denoised"])
def test_no_identifying_value_survives(outputs, kind):
    planted, root = outputs
    files = [p for p in (root / kind).rglob("*") if p.is_file() and p.suffix not in (".csv", ".json")]
    dicom = [p for p in files if pydicom.misc.is_dicom(p)]
    assert len(dicom) == 4
    checked = {k: v for k, v in planted.items() if len(v) >= 4}  # short values (sex "M", age) can occur by chance
    for path in dicom:
        raw = path.read_bytes()
        leaked = [k for k, v in checked.items() if v.encode() in raw]
        assert not leaked, f"{path.name} carries {leaked}"
        ds = pydicom.dcmread(path)
        assert ds.PatientIdentityRemoved == "YES" and "DERIVED" in list(ds.ImageType)
