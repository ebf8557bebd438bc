"""tinymae: Masked Autoencoders (He et al., CVPR 2022) written by hand in NumPy / CuPy, without autograd.

Where each step of MAE lives:
    backend.py    the array library (NumPy or CuPy, from TINYMAE_BACKEND)
    patches.py    patchify / unpatchify
    masking.py    random_masking, and the decoder's mask tokens + un-shuffle
    layers.py     Linear, ReLU, LayerNorm, GELU and the initialisers
    attention.py  softmax and multi-head self-attention
    transformer.py  the pre-norm Transformer block (attention + MLP, two residuals)
    pos_embed.py  the fixed 2-D sin-cos position embeddings
    loss.py       the MSE on removed patches (forward_loss), norm_pix_loss; cross-entropy; the probe's loss
    optim.py      AdamW and the warm-up + cosine learning-rate schedule
    mae_mlp.py    an MAE of plain MLPs (forward_encoder, forward_decoder, forward_loss, backward)
    mae_vit.py    the paper's ViT MAE (MaskedAutoencoderViT, as models_mae.py)
    ablations.py  the paper's ablation of an encoder that also sees mask tokens (Table 1c)
    models_vit.py the ViT classifier fine-tuning builds on the pre-trained encoder (as models_vit.py)
    config.py     every setting: the models' shapes and the recipes; the command lines are built from it
    models.py     build a model from its name and settings
    pretrain.py   python -m tinymae.pretrain: the pre-training loop (train_one_epoch, pretrain)
    finetune.py   python -m tinymae.finetune: supervised fine-tuning, the paper's main protocol
    parallel.py   the data-parallel step that keeps every CPU core busy (the fast path)
    data.py       folders of photos -> cached arrays -> augmented, normalised batches; the download
    checkpoint.py .npz checkpoints, no pickle
    files.py      atomic file writes (checkpoints, metrics, the image cache)
    metrics.py    masked-patch error in pixels, and the baselines
    evaluate.py   python -m tinymae.evaluate
    probe.py      python -m tinymae.probe: linear probe and k-NN on frozen features
    figures.py    reconstructions and loss curves
    gradcheck.py  finite-difference checks for any forward/backward pair
    speed.py      optional process-level speed settings (glibc malloc thresholds)
"""
__version__ = "0.1.0"
