"""The sensitivity analysis of a study's results (Morris or Sobol), for its report and figures.

Its own module so that `studies.report` and `studies.plots` both use it without importing each
other.
"""

from __future__ import annotations

import pandas as pd

from dmmlkd.studies.spec import StudySpec


def analyse(spec: StudySpec, results: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The sensitivity analysis of a Morris or Sobol study (empty for a grid study)."""
    if results.empty:
        return {}
    if spec.kind == "morris":
        from dmmlkd.studies.morris import analyse as morris_analyse

        return {"morris": morris_analyse(results, spec.morris, spec.outputs)}
    if spec.kind == "sobol":
        from dmmlkd.studies.sobol import analyse as sobol_analyse

        indices, second, trend = sobol_analyse(results, spec.sobol, spec.outputs)
        return {"indices": indices, "s2": second, "convergence": trend}
    return {}
