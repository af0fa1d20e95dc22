"""Kernels of our own, apart from the backends that use them: oneDNN convolution routing
(cpu_kernels.py), Winograd F(4x4, 3x3) convolutions as a graph rewrite (winograd.py) and
compiled with numba (winograd_kernel.py), and class selection of upsampled logits along
class edges only, in torch (edge_labels.py) and compiled (edge_kernel.py)."""
