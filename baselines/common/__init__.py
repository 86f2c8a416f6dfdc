"""The training stack shared by every baseline: loop, data, backbones, encoder, distributed."""
