"""Our TTS model families (autoregressive, masked non-autoregressive, flow matching), trained on CPU.

Shared pieces: text (sentences, phone front end), corpus (the multi-voice training corpus),
audio (log-mel features and the Griffin-Lim vocoder), tokenizer (residual k-means speech tokens),
aligner (phone durations by monotonic alignment search, and the duration predictor), modules
(transformer blocks). One file per family: ar.py, nar.py, flow.py; train.py trains them; system.py
wraps them as registered systems; checkpoints/ holds the committed weights with a manifest.
"""
