"""What a check reports: one :class:`Finding` per problem found in a sample (or a pair of samples)."""

from __future__ import annotations

from dataclasses import dataclass

# error: the sample is unusable as it stands (excluded unless an option says otherwise);
# warning: a defect that was repaired, or that a person should look at;
# info: worth knowing, changes nothing (e.g. vessel pixels outside DRIVE's field of view).
SEVERITIES = ("error", "warning", "info")
# What clean did about it.
ACTIONS = ("excluded", "repaired", "flagged", "kept", "noted")


@dataclass(frozen=True)
class Finding:
    code: str
    severity: str
    value: float           # the measured quantity the decision was based on (see docs/CLEAN.md)
    message: str
    action: str = "flagged"
    partner: str = ""      # the other sample of a pair (duplicate, near_duplicate_conflict, leakage)

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"finding {self.code}: severity {self.severity!r} is not one of {SEVERITIES}")
        if self.action not in ACTIONS:
            raise ValueError(f"finding {self.code}: action {self.action!r} is not one of {ACTIONS}")

    def row(self, sample_id: str) -> dict:
        """One row of findings.csv."""
        return {"sample_id": sample_id, "code": self.code, "severity": self.severity,
                "value": self.value, "action": self.action, "message": self.message,
                "partner": self.partner}


FINDING_COLUMNS = ("sample_id", "code", "severity", "value", "action", "message", "partner")
