"""Findings: stable serialisation (stored by the catalog) and merging of repeats across instances."""

from dicomflow.core.checks import Code, Finding, Severity, merge


def test_round_trip_and_merge():
    a = Finding(Severity.WARNING, Code.VALIDITY_MISSING_TYPE2, "Type 2 attribute X is missing.")
    b = Finding(Severity.ERROR, Code.VALIDITY_MISSING_TYPE1, "Type 1 attribute Y is missing.")
    assert Finding.from_dict(a.as_dict()) == a
    merged = merge([a, a, a, b])
    assert [f.code for f in merged] == [Code.VALIDITY_MISSING_TYPE1, Code.VALIDITY_MISSING_TYPE2]  # worst first
    assert merged[1].message.endswith("(3 instances)") and merged[0].message == b.message
