"""Imports torchvision on the CPU build of torch.

The torchvision wheel in the local index is built against CUDA torch; on torch's CPU build its C extension (nms,
roi_align and the other detection ops) cannot load, and torchvision 0.28's import then fails registering fake
kernels for those missing ops. The tests use only transforms and models, which are plain Python over torch and PIL,
so the registration of the missing ops' fake kernels is skipped during the import, and nothing else is changed.
"""
import torch.library

_register_fake = torch.library.register_fake
torch.library.register_fake = lambda *args, **kwargs: (lambda fn: fn)
try:
    import torchvision  # noqa: E402
    from torchvision import models, transforms  # noqa: E402,F401
    from torchvision.transforms import v2  # noqa: E402,F401
finally:
    torch.library.register_fake = _register_fake
