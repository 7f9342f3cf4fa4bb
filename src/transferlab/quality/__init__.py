"""The deep quality check: near-duplicate leaks between train and val, near-duplicates within a split,
suspected label errors and outliers, found from the backbone's features before they inflate or poison a result.

neighbours.py: exact cosine k-NN (faiss); thumbnails.py: the pixel signal that confirms a duplicate;
duplicates.py: candidate pairs confirmed; labels.py: confident learning (cleanlab); outliers.py: k-NN distance;
audit.py: all of it over one folder's features; report.py: findings, text and JSON; html.py: the page with
thumbnails; check.py: `deep_check(settings)`, the audit of a folder as a training run would see it.
"""

from transferlab.quality.audit import audit
from transferlab.quality.report import QualityFinding, QualityReport

__all__ = ["QualityFinding", "QualityReport", "audit"]
