"""Evaluation protocols. Each module exposes ``run(ctx: EvalContext) -> ProtocolResult``."""
