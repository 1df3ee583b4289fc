"""Maps that know where the retina is and nothing about the model: the bar localization must clear.

A saliency map that finds the retina "localizes" lesions on every whole-image measure, since
lesions lie in the retina. So the audit scores two priors beside random maps, and credits a method
with finding lesions only where it beats the stronger of them:

- **Retina prior**: uniform over the retina found on each scan, :math:`m(r, c) = R(r, c)`.
- **Thick-retina prior**: the retina weighted by its thickness, peaked at the middle of its
  thickest part. Fluid, CNV and drusen lift and swell the retina, so a map that only knows the
  anatomy already points at much of CNV and DME. With :math:`R` the retina mask, :math:`t(c)` its
  thickness in column :math:`c` (retina pixels in it), :math:`\\bar t(c)` that thickness
  smoothed over a sixteenth of the width, and :math:`\\mu(c)` the mean row of its pixels in the
  column:

  .. math:: m(r, c) = R(r, c)\\, \\bar t(c)\\, \\bigl(1 - |r - \\mu(c)| / \\max(t(c), 1)\\bigr)

  The depth term (between 1/2 and 1 inside the retina) puts the peak in the middle of the
  thickest column rather than at its top edge, where a lesion would be.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

#: The reference maps the localization table shows beside the methods, by name.
RANDOM = "random maps"
RETINA = "retina prior"
THICKEST = "thick-retina prior"
PRIORS = (RETINA, THICKEST)


def retina_prior(retina: torch.Tensor) -> torch.Tensor:
    """(B, H, W) maps uniform over each scan's retina (B, H, W)."""
    return retina.float()


def thickest_retina_prior(retina: torch.Tensor) -> torch.Tensor:
    """(B, H, W) maps of each retina weighted by its smoothed thickness per column, highest in
    the middle of the thickest part (the module docstring gives the formula)."""
    inside = retina.float()
    height, width = inside.shape[-2:]
    thickness = inside.sum(dim=1)  # (B, W) retina pixels per column
    window = max(1, width // 16) | 1  # odd, so the smoothing keeps each column in place
    smoothed = F.avg_pool1d(
        thickness[:, None], window, stride=1, padding=window // 2, count_include_pad=False
    )[:, 0]
    rows = torch.arange(height, dtype=inside.dtype, device=inside.device)[None, :, None]
    middle = (inside * rows).sum(dim=1, keepdim=True) / thickness[:, None].clamp_min(1)
    depth = 1 - (rows - middle).abs() / thickness[:, None].clamp_min(1)
    return inside * smoothed[:, None] * depth.clamp_min(0)
