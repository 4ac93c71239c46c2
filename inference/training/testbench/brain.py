"""The intracranial contents: CSF, cortical and deep grey matter, white matter, lesions.

Grey and white matter fractions are the MNI152 probabilities themselves, so partial volume
at the cortex is the template's; CSF fills the rest of the intracranial space. Deep grey
nuclei (basal ganglia, thalami) are the grey matter inside a central ellipsoid, given their
own, shorter T1 and T2. Some cases carry small white-matter lesions, bright on T2w/FLAIR.
"""

from __future__ import annotations

import numpy as np

from inference.geometry import FloatArray
from inference.training.testbench.atlas import Atlas
from inference.training.testbench.canvas import Canvas
from inference.training.testbench.shapes import Region, soft_step

DEEP_GREY = ((0.0, -6.0, 3.0), (29.0, 30.0, 17.0))
"""Centre and radii (MNI mm) of the ellipsoid holding the basal ganglia and thalami."""


def paint_intracranial(
    canvas: Canvas,
    region: Region,
    csf_depth: FloatArray,
    atlas: Atlas,
    colours: dict[str, FloatArray],
    rng: np.random.Generator,
) -> dict[str, str]:
    """Fill the intracranial space (depth below ``csf_depth``) and say how many lesions."""
    where = np.flatnonzero(region.depth < float(csf_depth.max()) + 0.5)
    inside = soft_step(csf_depth[where] - region.depth[where])
    canvas.paint(colours["csf"], inside, where)
    voxels = region.index[where]
    gm = atlas.gm.reshape(-1)[voxels]
    wm = atlas.wm.reshape(-1)[voxels]
    scale = inside / np.maximum(gm + wm, 1.0)
    deep = region.ellipsoid(*DEEP_GREY, at=where)
    fractions = {"gm": gm * (1 - deep) * scale, "deep_gm": gm * deep * scale, "wm": wm * scale}
    # painting tissue k over the earlier ones with f_k / (CSF + f_1 + … + f_k) leaves each
    # tissue its own fraction f_k
    running = np.clip(1.0 - sum(fractions.values()), 0.0, 1.0)
    for name, fraction in fractions.items():
        running = running + fraction
        canvas.paint(
            colours[name], (fraction / np.maximum(running, 1e-6)).astype(np.float32), where
        )

    count = int(min(rng.poisson(1.2), 5))
    candidates = where[wm > 0.95]
    for _ in range(count):
        centre_at = int(rng.choice(candidates))
        centre = (
            float(region.x[centre_at]),
            float(region.y[centre_at]),
            float(region.z[centre_at]),
        )
        radii = (
            float(rng.uniform(2.0, 5.0)),
            float(rng.uniform(2.0, 5.0)),
            float(rng.uniform(2.0, 5.0)),
        )
        at = region.near(centre, radii)
        white = atlas.wm.reshape(-1)[region.index[at]]
        canvas.paint(colours["lesion"], region.ellipsoid(centre, radii, at=at) * white, at)
    return {"lesions": str(count)}
