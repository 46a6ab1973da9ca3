"""vaekit.metrics beside disentanglement_lib's algorithm (transcribed in the test) on the issue's cases.

Prints one JSON line per (case, metric): vaekit's value, the reference's value and their
difference. The reference is the transcription in ``tests/test_disentanglement_reference.py``
(disentanglement_lib's ``mig``, ``sap_score``, ``dci``, ``modularity_explicitness``), the cases
are that test's: ground-truth factors as codes, a rotation, noise, half factors / half noise,
and random codes. DCI on the first 400 / 200 rows, as in the test.

    python benchmarks/disentangle_reference.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import test_disentanglement_reference as ref  # noqa: E402
from vaekit.metrics import dci, explicitness, mig, modularity, sap  # noqa: E402


def main() -> None:
    for name in ref.CASES:
        ztr, ftr, zte, fte = ref._case(name)
        mus, ys, mus_t, ys_t = ref._t(ztr, ftr, zte, fte)
        small = ref._small(ztr, ftr, zte, fte)
        np.random.seed(0)
        d_ref = ref.ref_dci(*ref._t(*small))
        d_got = dci(*small, random_state=0)
        e_ref = ref.ref_explicitness(mus, ys, mus_t, ys_t)
        e_got = explicitness(ztr, ftr, zte, fte)
        pairs = {
            "mig": (mig(ztr, ftr), ref.ref_mig(mus, ys)),
            "modularity": (modularity(ztr, ftr), ref.ref_modularity(mus, ys)),
            "sap_discrete": (sap(ztr, ftr, zte, fte), ref.ref_sap(mus, ys, mus_t, ys_t, False)),
            "sap_continuous": (
                sap(ztr, ftr, zte, fte, form="continuous"),
                ref.ref_sap(mus, ys, mus_t, ys_t, True),
            ),
            "dci_disentanglement": (d_got.disentanglement, d_ref[0]),
            "dci_completeness": (d_got.completeness, d_ref[1]),
            "dci_informativeness": (d_got.informativeness, d_ref[2]),
            "explicitness_train": (e_got[0], e_ref[0]),
            "explicitness_test": (e_got[1], e_ref[1]),
            "fast_sap_nearest_mean": (sap(ztr, ftr, zte, fte, form="nearest_mean"), None),
        }
        for metric, (got, want) in pairs.items():
            row = {"case": name, "metric": metric, "vaekit": round(float(got), 6)}
            if want is not None:
                row.update(reference=round(float(want), 6), diff=float(got - want))
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
