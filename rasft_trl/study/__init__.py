"""Studies: methods as recipes plus overrides, several seeds, a learning-rate (or other) choice on a validation set,
evaluation through `rasft-trl eval`, and a report with intervals and paired differences (`rasft-trl study SPEC`).

See docs/study.md ("Running a study") and [`~rasft_trl.study.spec.StudySpec`].
"""

from .spec import MethodSpec, StudySpec, load_spec  # noqa: F401
