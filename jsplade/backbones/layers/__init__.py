"""The layers the backbones are built from: attention (plain, chunked, blockwise/flash, cuDNN, TPU splash),
rotary embedding, projections with written-out backward passes, dropout, norms, embeddings, the GLU MLP,
the shared MLM head and per-layer rematerialisation. Plain functions and small NNX modules of arrays;
nothing here knows a model family or its config.

May import: nothing.
"""
