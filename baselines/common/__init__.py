"""What every baseline shares: the method base and config fields, the loop, data, backbones, encoder, distributed.

==================  ==========================================================================
``method``          ``BaselineMethod``: ``harness.encoders.Method`` once, with hooks per method
``config``          ``MethodConfig`` / ``TrainingConfig`` (the shared fields), ``from_dict``
``train``           ``Trainer``: device-agnostic, AMP, DDP, exact resume
``data``            CXR-safe augmentations and the batches of augmented views
``sampling``        ``StepSampler``: which rows a step draws, per rank
``seeding``         per-step generators and storable RNG states
``ema``             EMA updates of a target branch and their momentum schedules (constant, MSN's linear)
``optim``           which parameters weight decay applies to (every one, or MSN's rule)
``backbones``       torchvision / timm backbones with global and region features
``encoder``         ``BackboneEncoder``: a backbone as an image + region encoder
``text``            tokenizers, text encoders, MLM masking, report text
``distributed``     ``torch.distributed`` in one place (no-ops on one process)
==================  ==========================================================================
"""
