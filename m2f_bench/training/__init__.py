"""Training of the learned inpainters (``unet-gan``, ``baseline-gan``) on prepared faces.

One concern per module: :mod:`~m2f_bench.training.config` (the validated YAML schema),
:mod:`~m2f_bench.training.data` (on-the-fly masking and augmentation),
:mod:`~m2f_bench.training.losses`, :mod:`~m2f_bench.training.discriminator`,
:mod:`~m2f_bench.training.loop`, :mod:`~m2f_bench.training.checkpoint` and
:mod:`~m2f_bench.training.distributed`. The generators themselves are inpainters
(:mod:`m2f_bench.inpainters.unet_gan`, :mod:`m2f_bench.inpainters.baseline_gan`); this
package imports them, never the reverse. Importing it imports torch.
"""
