"""Transposed convolution: the gradient of `conv2d` with respect to its input, as an op.

`torch.nn.functional.conv_transpose2d` semantics in NHWC layout. Each input pixel scatters a
copy of the kernel, scaled by its value, into the output at stride spacing; overlapping
copies add. This is exactly the vector-Jacobian product of `conv2d` with respect to `x`:

    conv_transpose2d(g, w_t, stride=s, padding=p, output_padding=op, dilation=d, groups=G)
      == jax.vjp(lambda x: conv2d(x, w_c, stride=s, padding=p, dilation=d, groups=G), x)[1](g)

with w_t = w_c.transpose(0, 1, 3, 2) (the same torch tensor in both layouts) and
op = (H + 2p - d * (k - 1) - 1) mod s choosing which of the input sizes that map to the same
conv output size is meant. It is why the op raises resolution ("deconvolution" in older
papers, and the backward pass of Zeiler & Fergus's deconvnet).

Output size per axis:

    H_out = (H - 1) * stride - pad_top - pad_bottom + dilation * (kh - 1) + output_padding + 1
"""

from __future__ import annotations

import jax
from jax import lax

from ._args import _is_int, check_float, check_nhwc, explicit_padding, pair
from .reduction import add_bias


def conv_transpose2d(
    x: jax.Array,
    w: jax.Array,
    b: jax.Array | None = None,
    *,
    stride=1,
    padding=0,
    output_padding=0,
    dilation=1,
    groups: int = 1,
) -> jax.Array:
    """2-D transposed convolution, `torch.nn.functional.conv_transpose2d` semantics.

    Args:
      x: (N, H, W, C_in) float input.
      w: (kh, kw, C_in, C_out // groups): a torch ConvTranspose2d weight `wt` of shape
        (C_in, C_out // groups, kh, kw) maps to `wt.permute(2, 3, 0, 1)`.
      b: optional (C_out,) bias.
      stride: int or (sh, sw), >= 1: the upsampling factor.
      padding: int, (ph, pw) or ((top, bottom), (left, right)): rows/columns trimmed from
        each side of the full transposed output, as torch's `padding`; it undoes the same
        padding of the corresponding `conv2d`.
      output_padding: int or (oph, opw): extra rows/columns added at the bottom/right to
        pick the output size; each must be smaller than stride or dilation on its axis.
      dilation: int or (dh, dw), >= 1.
      groups: C_in and C_out split into this many independent groups.

    Returns:
      (N, H_out, W_out, C_out) with
      H_out = (H - 1) * sh - pad_top - pad_bottom + dh * (kh - 1) + oph + 1.
    """
    op = "conv_transpose2d"
    check_nhwc(x, op)
    check_float(x, op)
    if getattr(w, "ndim", None) != 4:
        raise ValueError(
            f"{op}: `w` must have rank 4, (kh, kw, C_in, C_out // groups); got shape "
            f"{getattr(w, 'shape', type(w))}"
        )
    if not _is_int(groups) or groups < 1:
        raise ValueError(f"{op}: `groups` must be a positive int; got {groups!r}")
    kh, kw, w_cin, cout_g = w.shape
    if min(kh, kw) < 1:  # XLA would fail later with a verifier error
        raise ValueError(
            f"{op}: the kernel size (kh, kw) of `w` must be >= 1 in each dimension; got "
            f"w.shape={tuple(w.shape)}, (kh, kw, C_in, C_out // groups)"
        )
    c_in = x.shape[-1]
    if w_cin != c_in:
        raise ValueError(
            f"{op}: channel mismatch: x has C_in={c_in} channels (x.shape={tuple(x.shape)}) "
            f"but w.shape={tuple(w.shape)} expects {w_cin}; w must be (kh, kw, C_in, "
            "C_out // groups)"
        )
    if c_in % groups:
        raise ValueError(f"{op}: input channels C_in={c_in} must be divisible by groups={groups}")
    c_out = cout_g * groups
    if b is not None and tuple(getattr(b, "shape", ())) != (c_out,):
        raise ValueError(
            f"{op}: `b` must have shape (C_out,) = ({c_out},); got {getattr(b, 'shape', b)}"
        )
    stride = pair(stride, "stride", op)
    dilation = pair(dilation, "dilation", op)
    pads = explicit_padding(padding, op)
    out_pad = pair(output_padding, "output_padding", op, minimum=0)
    for ax in range(2):
        if out_pad[ax] >= max(stride[ax], dilation[ax]):
            raise ValueError(
                f"{op}: `output_padding` must be smaller than stride or dilation on each axis; "
                f"got output_padding={out_pad} with stride={stride}, dilation={dilation}"
            )

    kernel = (kh, kw)
    out_hw = tuple(
        (x.shape[1 + ax] - 1) * stride[ax]
        - sum(pads[ax])
        + dilation[ax] * (kernel[ax] - 1)
        + out_pad[ax]
        + 1
        for ax in range(2)
    )
    if min(out_hw) <= 0:
        raise ValueError(
            f"{op}: output size would be {out_hw} for input spatial size {x.shape[1:3]} "
            f"(x.shape={tuple(x.shape)}), kernel_size={kernel}, stride={stride}, "
            f"padding={pads}, dilation={dilation}, output_padding={out_pad}; reduce the "
            "padding or use a larger input"
        )

    # As a forward convolution: dilate the input by the stride (lhs_dilation), pad each side
    # by dilation * (k - 1) - padding (negative values crop), and correlate with the kernel
    # flipped in space and regrouped to HWIO (kh, kw, C_in // groups, C_out).
    cin_g = c_in // groups
    k = w.astype(x.dtype).reshape(kh, kw, groups, cin_g, cout_g)
    k = k.transpose(0, 1, 3, 2, 4).reshape(kh, kw, cin_g, c_out)[::-1, ::-1]
    conv_pads = []
    for ax in range(2):
        full = dilation[ax] * (kernel[ax] - 1)
        lo, hi = pads[ax]
        conv_pads.append((full - lo, full - hi + out_pad[ax]))
    y = lax.conv_general_dilated(
        x,
        k,
        window_strides=(1, 1),
        padding=conv_pads,
        lhs_dilation=stride,
        rhs_dilation=dilation,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups,
    )
    if b is not None:
        y = add_bias(y, b.astype(y.dtype))
    return y
