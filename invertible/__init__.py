"""accel.invertible: invertible diffusion models for compressed sensing (IDM, Chen et al., TPAMI 2025).

- :class:`BlockCS` / :class:`CSConfig`: the block CS operator (``A``, ``A^T``, the exact projection).
- :class:`IDM`: a pretrained ``UNet2DModel``'s T-step sampler as a two-level reversible network.
- :func:`run_chain` / :class:`Coupling`: the reversible units and the memory-saving autograd function.
- :func:`finetune`, :func:`reconstruct`, :func:`load_idm`: fine-tuning, reconstruction, weight files.
"""

from .finetune import FinetuneConfig, finetune
from .idm import IDM
from .operator import BlockCS, CSConfig
from .reconstruct import reconstruct
from .reversible import Coupling, run_chain
from .weights import load_idm, save_idm

__all__ = ["BlockCS", "CSConfig", "Coupling", "FinetuneConfig", "IDM", "finetune", "load_idm", "reconstruct", "run_chain", "save_idm"]
