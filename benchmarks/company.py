"""Issue 9: does a name's embedding depend on the other names of its batch? max |encode([x])[0] - encode([x, *others])[0]|.

    PYTHONPATH=. python benchmarks/company.py tina_edge/bundles/default
"""
import json
import sys

import numpy as np
from tina_edge.runtime import Personalizer
p = Personalizer.from_bundle(sys.argv[1], threads=1)
names = list(p.manifest.training.classes or []) + ["golden retriever", "a much longer name that pads every other row"]
worst = 0.0
for x in names:
    alone = p.encode([x])[0]
    for others in ([names[0]], names[:5], names[:10], ["golden retriever", "a much longer name that pads every other row"]):
        worst = max(worst, float(np.abs(p.encode([x, *others])[0] - alone).max()))
print(json.dumps({"names": len(names), "max_abs_diff": worst}))
