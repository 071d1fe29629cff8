"""Every status a series goes through on its way to a processing result, as users see them.

Defined here, in pure core, so the rule engine, the Django models and the UI share one vocabulary.
The values are the names themselves so they read the same in the database, JSON and logs.
"""

from __future__ import annotations

from enum import Enum


class SeriesStatus(str, Enum):
    UNPROCESSED = "UNPROCESSED"
    RULE_MATCHED = "RULE_MATCHED"
    RULE_NOT_MATCHED = "RULE_NOT_MATCHED"
    MULTIPLE_RULES_MATCHED = "MULTIPLE_RULES_MATCHED"
    NO_TEMPLATE_FOUND = "NO_TEMPLATE_FOUND"
    CHECK_FAILED = "CHECK_FAILED"  # a blocking check finding stopped the automatic path: a person decides
    READY_FOR_DEIDENTIFICATION = "READY_FOR_DEIDENTIFICATION"
    DEIDENTIFIED = "DEIDENTIFIED"
    DEIDENTIFICATION_FAILED = "DEIDENTIFICATION_FAILED"
    SENT_FOR_PROCESSING = "SENT_FOR_PROCESSING"
    RESULT_RECEIVED = "RESULT_RECEIVED"
    RESULT_INVALID = "RESULT_INVALID"
    RESULT_EXPORTED = "RESULT_EXPORTED"
    EXPORT_FAILED = "EXPORT_FAILED"
    ERROR = "ERROR"

    def __str__(self) -> str:  # so f-strings and JSON show the bare name
        return self.value


#: Statuses the rule engine itself can produce (the others belong to later pipeline stages).
RULE_STATUSES = frozenset(
    {
        SeriesStatus.RULE_MATCHED,
        SeriesStatus.RULE_NOT_MATCHED,
        SeriesStatus.MULTIPLE_RULES_MATCHED,
        SeriesStatus.NO_TEMPLATE_FOUND,
    }
)
