"""Protocols: how a task scores an encoder (step 5 of the data flow).

Each module exposes ``run(ctx: EvalContext) -> ProtocolResult`` and declares its arguments
and metrics once (``ARGS``, checked by ``harness.protocols.args``); ``base`` holds the seam
(``EvalContext``, ``ProtocolResult``) and ``evaluate``, the frozen-weights guard every run
goes through. Protocols receive prepared inputs (the cohort with the label fraction applied,
the encoder and its weights hash) and return metrics, CIs, predictions and details:

``linear_probe`` (frozen features, L-BFGS logistic regression), ``finetune`` (encoder +
head), ``multimodal`` (image + indication text), ``retrieval`` (image-text, zero-shot; its
ranks and scores from embeddings in ``retrieval_scores``),
``regeneration`` (masked patches), ``localization`` (phrase grounding on boxes).
"""
