"""Fine-tuning (tinymae.finetune, models_vit.ViTClassifier): the smoothed cross-entropy against PyTorch, the
classifier's whole-model gradients, the layer-wise learning-rate decay against the official
param_groups_lrd, and the command end to end on a tiny pre-trained ViT."""
import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

import tinymae
from tinymae import backend, finetune
from tinymae.backend import asarray, host_rng, to_numpy
from tinymae.config import FinetuneConfig, ViTConfig
from tinymae.data import labelled_subset
from tinymae.errors import TinymaeError
from tinymae.model import build_model
from tinymae.model.layers import layernorm_forward
from tinymae.model.loss import (soft_target_cross_entropy_backward, soft_target_cross_entropy_forward,
                                softmax_cross_entropy_backward, softmax_cross_entropy_forward)
from tinymae.model.mae_mlp import MaskedAutoencoderMLP
from tinymae.model.mae_vit import MaskedAutoencoderViT
from tinymae.model.masking import gather_tokens
from tinymae.model.models_vit import ViTClassifier, drop_path_keep
from tinymae.model.optim import AdamW
from tinymae.util.checkpoint import Checkpoint, read_checkpoint, save_checkpoint
from tinymae.util.gradcheck import assert_backward_matches
from tinymae.util.lr_decay import param_groups_lrd

from conftest import make_photos, train_tiny

# ----------------------------------------------------------------------------------------------
# the loss

@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_matches_torch(xp, smoothing):
    torch = pytest.importorskip("torch")
    rng = host_rng(0)
    logits = rng.standard_normal((6, 3)) * 3  # (N, C) float64
    labels = rng.integers(0, 3, 6)  # (N,)
    dloss = 0.7  # an upstream gradient other than 1

    loss, cache = softmax_cross_entropy_forward(asarray(logits), asarray(labels), smoothing)
    dlogits = softmax_cross_entropy_backward(dloss, cache)

    z = torch.tensor(logits, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(z, torch.tensor(labels), label_smoothing=smoothing)
    (ref * dloss).backward()
    assert loss.dtype == xp.float64 and dlogits.dtype == xp.float64
    np.testing.assert_allclose(float(loss), ref.item(), rtol=1e-12)
    np.testing.assert_allclose(to_numpy(dlogits), z.grad.numpy(), rtol=1e-10, atol=1e-15)


def test_soft_target_cross_entropy_matches_torch(xp):
    """Mixup's loss: torch's cross_entropy with probability targets (as timm's SoftTargetCrossEntropy)."""
    torch = pytest.importorskip("torch")
    rng = host_rng(0)
    logits, targets = rng.standard_normal((6, 3)) * 3, rng.dirichlet(np.ones(3), size=6)
    loss, cache = soft_target_cross_entropy_forward(asarray(logits), asarray(targets))
    dlogits = soft_target_cross_entropy_backward(0.7, cache)
    z = torch.tensor(logits, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(z, torch.tensor(targets))
    (ref * 0.7).backward()
    np.testing.assert_allclose(float(loss), ref.item(), rtol=1e-12)
    np.testing.assert_allclose(to_numpy(dlogits), z.grad.numpy(), rtol=1e-10, atol=1e-15)


def test_smoothed_one_hot_targets_give_the_label_smoothing_loss(xp):
    """With lam = 1 mixup's targets are the smoothed labels, and the two losses are the same function."""
    from tinymae.data import mixup_targets
    rng = host_rng(1)
    logits, labels = asarray(rng.standard_normal((5, 2))), np.array([0, 1, 1, 0, 1])
    targets = asarray(mixup_targets(labels, np.float32(1.0), 0.1, 2).astype("float64"))
    soft, _ = soft_target_cross_entropy_forward(logits, targets)
    hard, _ = softmax_cross_entropy_forward(logits, asarray(labels), 0.1)
    assert float(soft) == pytest.approx(float(hard), rel=1e-7)  # the targets are float32: 0.95 and 0.05 rounded


def test_mixup_blends_each_image_with_the_reversed_batch():
    from tinymae.data import mix_images, mixup_draw, mixup_targets
    imgs = np.arange(4 * 3 * 2 * 2, dtype=np.float32).reshape(4, 3, 2, 2)
    lam = mixup_draw(host_rng(0), 0.8)
    assert lam.dtype == np.float32 and 0.0 <= lam <= 1.0
    np.testing.assert_allclose(mix_images(imgs, lam), lam * imgs + (1 - lam) * imgs[::-1], rtol=1e-6)
    targets = mixup_targets(np.array([0, 0, 1, 1]), lam, 0.0, 2)
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(targets[0], [lam, 1 - lam], rtol=1e-6)  # image 0 mixed with image 3 (a dog)


def test_cross_entropy_is_safe_on_huge_logits(xp):
    """Logits far beyond exp's float32 range (~88): finite, and equal to the float64 answer."""
    logits = np.array([[1e4, -1e4], [3e4, 3e4 - 2.0], [-5e4, 5e4], [0.0, 1e-3]], dtype="float32")  # (N, 2)
    labels = np.array([0, 0, 0, 1])
    loss, cache = softmax_cross_entropy_forward(asarray(logits), asarray(labels), 0.1)
    dlogits = softmax_cross_entropy_backward(1.0, cache)
    assert loss.dtype == xp.float32 and dlogits.dtype == xp.float32
    assert np.isfinite(float(loss)) and np.isfinite(to_numpy(dlogits)).all()

    z = logits.astype("float64")  # the reference: the formulas in float64, with the same max shift
    log_p = z - z.max(1, keepdims=True) - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))
    expected = (0.9 * -log_p[np.arange(4), labels] + 0.1 * -log_p.mean(1)).mean()
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6)
    q = np.full((4, 2), 0.05)
    q[np.arange(4), labels] += 0.9
    np.testing.assert_allclose(to_numpy(dlogits), (np.exp(log_p) - q) / 4, atol=1e-7)


# ----------------------------------------------------------------------------------------------
# the classifier

def tiny_classifier(depth=2, seed=3):
    """A float64 ViTClassifier of a tiny config, every parameter set to random values (as
    test_model_gradients.tiny_vit: behind the init's zero biases and unit scales a bug could hide)."""
    cfg = ViTConfig(img_size=8, patch_size=2, embed_dim=8, depth=depth, num_heads=2, decoder_embed_dim=8,
                    decoder_depth=1, decoder_num_heads=2, mlp_ratio=2.0)
    model = ViTClassifier(MaskedAutoencoderViT(cfg, seed=seed), seed=seed)
    model.pos_embed = model.pos_embed.astype("float64")
    rng = host_rng(5)
    for name, value in model.params.items():
        model.params[name] = asarray(rng.standard_normal(value.shape) * 0.5)  # float64
    return model


def test_vit_classifier_whole_model_gradients(xp):
    model = tiny_classifier()
    rng = host_rng(0)
    imgs = asarray(rng.standard_normal((3, 3, 8, 8)))  # (N, 3, H, W) float64
    labels = asarray(np.array([0, 1, 1]))
    names = list(model.params)

    def forward(*arrays):
        model.params.update(zip(names, arrays))  # the very arrays the checker perturbs
        loss, logits, cache = model.forward(imgs, labels)
        return loss, cache

    def backward(dloss, cache):
        grads = model.backward(dloss, cache)
        return tuple(grads[name] for name in names)

    # The step and tolerance of test_model_gradients.test_vit_mae_whole_model_gradients, for the same
    # reason: a deep float64 computation, and the key bias's exactly-zero gradient.
    reports = assert_backward_matches(forward, backward, dict(model.params), tol=1e-5, h=3e-5)
    assert {r.name for r in reports} == set(names)


def test_vit_classifier_gradients_with_drop_path_and_frozen_blocks(xp):
    """With drop-path factors and the first block frozen: the finite differences of the trainable parameters,
    and exactly those parameters get gradients."""
    model = tiny_classifier()
    model.frozen_blocks = 1  # as ViTClassifier(..., trainable_blocks=1) with depth 2
    rng = host_rng(0)
    imgs = asarray(rng.standard_normal((3, 3, 8, 8)))  # (N, 3, H, W) float64
    labels = asarray(np.array([0, 1, 1]))
    # (N, 2, 2)
    keep = asarray(np.array([[[1.0, 1.0], [0.0, 1.5]], [[1.0, 1.0], [1.5, 1.5]], [[1.0, 1.0], [1.5, 0.0]]]))
    names = model.trainable
    assert names == [n for n in model.params if n.startswith(("blocks.1.", "fc_norm", "head"))]

    def forward(*arrays):
        model.params.update(zip(names, arrays))
        loss, logits, cache = model.forward(imgs, labels, keep)
        return loss, cache

    def backward(dloss, cache):
        grads = model.backward(dloss, cache)
        assert list(grads) == names
        return tuple(grads[name] for name in names)

    assert_backward_matches(forward, backward, {n: model.params[n] for n in names}, tol=1e-5, h=3e-5)


def test_drop_path_keep_rates_grow_over_the_blocks():
    keep = drop_path_keep(host_rng(0), 20000, 3, 0.2)  # (n, depth, 2)
    assert keep.shape == (20000, 3, 2) and keep.dtype == np.float32
    assert (keep[:, 0] == 1.0).all()  # rate 0 at the first block: never dropped
    for block, rate in ((1, 0.1), (2, 0.2)):
        assert set(np.unique(keep[:, block]).tolist()) == {0.0, np.float32(1 / (1 - rate))}
        assert abs((keep[:, block] == 0).mean() - rate) < 0.01  # dropped at its rate
        assert abs(keep[:, block].mean() - 1.0) < 0.02  # the expected factor is 1


def test_classifier_refuses_more_trainable_blocks_than_it_has():
    mae = MaskedAutoencoderViT(ViTConfig(img_size=8, patch_size=2, embed_dim=8, depth=2, num_heads=2,
                                         decoder_embed_dim=8, decoder_depth=1, decoder_num_heads=2))
    with pytest.raises(ValueError, match="between 0 and the encoder's depth 2, got 3"):
        ViTClassifier(mae, trainable_blocks=3)
    assert ViTClassifier(mae, trainable_blocks=0).trainable == ["fc_norm.w", "fc_norm.b", "head.w", "head.b"]
    assert ViTClassifier(mae, trainable_blocks=2).trainable == list(ViTClassifier(mae).params)


def test_classifier_encoder_is_the_maes_encoder(xp):
    """The classifier's tokens, put through the MAE's final norm, are the MAE's forward_encoder with every
    patch visible (mask_ratio 0, zero noise), once its shuffle is undone; the classifier has the MAE's
    encoder parameters (copies) but not its norm, decoder or mask token."""
    cfg = ViTConfig(img_size=8, patch_size=2, embed_dim=8, depth=2, num_heads=2, decoder_embed_dim=8,
                    decoder_depth=1, decoder_num_heads=2)
    mae = MaskedAutoencoderViT(cfg, seed=1)
    model = ViTClassifier(mae, seed=1)
    encoder = [n for n in mae.params if n.startswith(("patch_embed", "cls_token", "blocks."))]
    assert list(model.params) == encoder + ["fc_norm.w", "fc_norm.b", "head.w", "head.b"]
    for name in encoder:
        np.testing.assert_array_equal(to_numpy(model.params[name]), to_numpy(mae.params[name]))
        assert model.params[name] is not mae.params[name]  # fine-tuning leaves the MAE alone

    imgs = asarray(host_rng(0).standard_normal((2, 3, 8, 8)), dtype="float32")
    noise = xp.zeros((2, cfg.num_patches), dtype="float32")
    latent, mask, ids_restore, _ = mae.forward_encoder(imgs, noise, mask_ratio=0.0)  # (N, 1+L, D)
    assert float(mask.sum()) == 0.0
    tokens, _ = model.forward_encoder(imgs)  # (N, 1+L, D)
    normed, _ = layernorm_forward(tokens, mae.params["norm.w"], mae.params["norm.b"])
    np.testing.assert_allclose(to_numpy(normed[:, :1]), to_numpy(latent[:, :1]), atol=2e-5)
    np.testing.assert_allclose(to_numpy(normed[:, 1:]), to_numpy(gather_tokens(latent[:, 1:], ids_restore)),
                               atol=2e-5)


def test_new_head_starts_near_chance(xp):
    """trunc_normal(std=2e-5) head and zero bias, as main_finetune.py: every logit ~0, loss ~log 2."""
    cfg = ViTConfig(img_size=8, patch_size=2, embed_dim=8, depth=1, num_heads=2, decoder_embed_dim=8,
                    decoder_depth=1, decoder_num_heads=2)
    model = ViTClassifier(MaskedAutoencoderViT(cfg), seed=0)
    head = to_numpy(model.params["head.w"])
    assert head.shape == (8, 2) and 0 < np.abs(head).max() < 1e-4 and not to_numpy(model.params["head.b"]).any()
    imgs = asarray(host_rng(0).standard_normal((4, 3, 8, 8)), dtype="float32")
    loss, logits, _ = model.forward(imgs, asarray(np.array([0, 1, 0, 1])))
    assert np.abs(to_numpy(logits)).max() < 1e-3 and float(loss) == pytest.approx(np.log(2), abs=1e-3)


def test_classifier_refuses_other_models():
    mlp = MaskedAutoencoderMLP()
    with pytest.raises(ValueError, match="MaskedAutoencoderViT"):
        ViTClassifier(mlp)


def test_the_encoder_mask_tokens_ablation_fine_tunes_from_its_encoder(xp):
    """Table 1c fine-tunes the encoder that saw mask tokens: with every patch visible its [M] is unused."""
    ablation = build_model("vit", {"embed_dim": 8, "depth": 1, "num_heads": 2, "decoder_embed_dim": 8,
                                   "decoder_num_heads": 2, "encoder_mask_tokens": True}, seed=2)
    model = ViTClassifier(ablation)
    assert "encoder_mask_token" not in model.params
    np.testing.assert_array_equal(to_numpy(model.params["blocks.0.attn.qkv.w"]),
                                  to_numpy(ablation.params["blocks.0.attn.qkv.w"]))


# ----------------------------------------------------------------------------------------------
# the optimiser

def official_get_layer_id_for_vit(name, num_layers):
    """util/lr_decay.py of facebookresearch/mae, transcribed."""
    if name in ['cls_token', 'pos_embed']:
        return 0
    elif name.startswith('patch_embed'):
        return 0
    elif name.startswith('blocks'):
        return int(name.split('.')[1]) + 1
    else:
        return num_layers


def official_param_groups_lrd(named_shapes, num_blocks, weight_decay=0.05, no_weight_decay_list=[],
                              layer_decay=.75):
    """util/lr_decay.py's param_groups_lrd, transcribed: `model.named_parameters()` becomes a dict of
    name -> shape, `len(model.blocks)` num_blocks; returns its param_group_names (the groups, by name)."""
    param_group_names = {}
    num_layers = num_blocks + 1
    layer_scales = list(layer_decay ** (num_layers - i) for i in range(num_layers + 1))
    for n, shape in named_shapes.items():
        # no decay: all 1D parameters and model specific ones
        if len(shape) == 1 or n in no_weight_decay_list:
            g_decay = "no_decay"
            this_decay = 0.
        else:
            g_decay = "decay"
            this_decay = weight_decay
        layer_id = official_get_layer_id_for_vit(n, num_layers)
        group_name = "layer_%d_%s" % (layer_id, g_decay)
        if group_name not in param_group_names:
            this_scale = layer_scales[layer_id]
            param_group_names[group_name] = {"lr_scale": this_scale, "weight_decay": this_decay, "params": []}
        param_group_names[group_name]["params"].append(n)
    return param_group_names


def test_layer_decay_matches_the_official_param_groups_lrd():
    model = tiny_classifier(depth=3)
    lr_scale, no_decay = param_groups_lrd(model.params, depth=3, layer_decay=0.75)
    # timm's VisionTransformer.no_weight_decay(), which main_finetune.py passes: {'pos_embed', 'cls_token',
    # 'dist_token'}
    groups = official_param_groups_lrd({n: v.shape for n, v in model.params.items()}, num_blocks=3,
                                       no_weight_decay_list={"pos_embed", "cls_token", "dist_token"})
    seen = []
    for group in groups.values():
        for name in group["params"]:
            assert lr_scale[name] == pytest.approx(group["lr_scale"], rel=1e-15), name
            assert (name in no_decay) == (group["weight_decay"] == 0.0), name
            seen.append(name)
    assert sorted(seen) == sorted(model.params) == sorted(lr_scale)
    # The table itself, for depth 3: num_layers 4, scale 0.75 ** (4 - layer id).
    assert lr_scale["cls_token"] == lr_scale["patch_embed.w"] == 0.75 ** 4
    assert lr_scale["blocks.0.attn.qkv.w"] == 0.75 ** 3 and lr_scale["blocks.2.mlp.fc2.b"] == 0.75
    assert lr_scale["fc_norm.w"] == lr_scale["head.w"] == 1.0


def test_no_weight_decay_on_1d_parameters_and_cls_token(xp):
    """One AdamW step with zero gradients moves a parameter only by its decay, 1 - lr * lr_scale * wd."""
    model = tiny_classifier(depth=2)
    cfg = FinetuneConfig(lr=0.5, weight_decay=0.1, layer_decay=0.5)
    optimizer = AdamW(model.params, lr=cfg.lr, **finetune.adamw_settings(model, cfg))
    assert optimizer.betas == (0.9, 0.999)
    before = {name: to_numpy(value).copy() for name, value in model.params.items()}
    optimizer.step({name: xp.zeros_like(value) for name, value in model.params.items()})
    lr_scale, _ = param_groups_lrd(model.params, depth=2, layer_decay=0.5)
    for name, value in model.params.items():
        decayed = value.ndim > 1 and name != "cls_token"
        factor = 1 - 0.5 * lr_scale[name] * 0.1 if decayed else 1.0
        np.testing.assert_allclose(to_numpy(value), before[name] * factor, rtol=1e-12, err_msg=name)
    assert {"cls_token", "fc_norm.w", "head.b", "blocks.1.norm2.b"} <= set(optimizer.no_decay)
    assert "head.w" not in optimizer.no_decay and "blocks.0.attn.qkv.w" not in optimizer.no_decay


# ----------------------------------------------------------------------------------------------
# the labelled subset

def test_labelled_subset_draws_n_per_class():
    labels = np.array([0] * 10 + [1] * 7)
    a = labelled_subset(labels, 3, 0, ("cat", "dog"))
    assert len(a) == 6 and (np.bincount(labels[a]) == 3).all() and (np.diff(a) > 0).all()
    np.testing.assert_array_equal(a, labelled_subset(labels, 3, 0, ("cat", "dog")))
    assert not np.array_equal(a, labelled_subset(labels, 3, 1, ("cat", "dog")))
    with pytest.raises(TinymaeError, match="--labels-per-class 8 .* dog .* has \\(7\\)"):
        labelled_subset(labels, 8, 0, ("cat", "dog"))


# ----------------------------------------------------------------------------------------------
# the command, end to end, on a tiny ViT pre-trained once for this file

@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("finetune")
    with pytest.MonkeyPatch.context() as mp:
        photos = make_photos(tmp, mp)  # 20 cats, 20 dogs: 32 training and 8 validation photos
        train_tiny(tmp / "pre", photos, "vit", "--epochs", "1")
    return SimpleNamespace(photos=photos, checkpoint=tmp / "pre" / "checkpoint.npz", cache=tmp / "cache")


@pytest.fixture
def tiny(pretrained, monkeypatch):
    monkeypatch.setenv("TINYMAE_CACHE", str(pretrained.cache))  # the decoded photos of the fixture
    return pretrained


def args(tiny, out, *extra):
    """Two epochs of four steps; out=None: the default --out, next to the checkpoint."""
    return ["--checkpoint", str(tiny.checkpoint), *(["--out", str(out)] if out else []),
            "--epochs", "2", "--batch-size", "8", "--warmup-epochs", "1", "--no-progress", *extra]


def run_main(argv, capsys):
    """tinymae.finetune.main as a user runs it: -> (exit code, error message, stdout)."""
    capsys.readouterr()
    try:
        code = finetune.main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, err, out


def run_ok(argv, capsys):
    code, message, out = run_main(argv, capsys)
    assert code == 0, message
    return json.loads(out.strip().splitlines()[-1]), out


def kaggle_folder(photos, dest):
    """A copy of some photos in the Kaggle layout (cat.0.jpg, dog.0.jpg, ... in one folder)."""
    dest.mkdir()
    for name in ("cat", "dog"):
        for i in range(3):
            shutil.copy(photos / name / f"{i}.jpg", dest / f"{name}.{i}.jpg")
    return dest


def test_finetune_end_to_end(xp, tiny, tmp_path, capsys):
    """On every backend: prints one JSON line, writes --json, result.json and a classifier that loads, with the
    pre-training run's own split (its validation photos) and the class names in their order."""
    test_data = kaggle_folder(tiny.photos, tmp_path / "test")
    out = tmp_path / "ft"
    result, printed = run_ok(args(tiny, out, "--test-data", str(test_data), "--json", str(tmp_path / "r.json")),
                             capsys)
    assert 0.0 <= result["val_accuracy"] <= 1.0 and 0.0 <= result["test_accuracy"] <= 1.0
    assert result["n_train"] == 32 and result["n_val"] == 8 and result["n_test"] == 6
    assert result["backend"] == backend.name and not result["from_scratch"] and result["classes"] == ["cat", "dog"]
    assert result["data_fingerprint"] == result["pretraining_fingerprint"]  # the run's own photos
    assert json.loads((tmp_path / "r.json").read_text()) == result
    epoch_lines = [line for line in printed.splitlines() if line.startswith("epoch")]
    assert len(epoch_lines) == 2 and all("train loss" in l and "train accuracy" in l and "val accuracy" in l
                                         for l in epoch_lines)
    details = json.loads((out / "result.json").read_text())
    assert [h["epoch"] for h in details["history"]] == [1, 2]
    assert details["history"][-1]["val_accuracy"] == result["val_accuracy"]

    pre = read_checkpoint(tiny.checkpoint)[0]["data"]
    with Checkpoint(out / "classifier.npz") as ckpt:
        header = ckpt.header
        assert "param/head.w" in ckpt.names and "param/norm.w" not in ckpt.names
    assert header["classes"] == ["cat", "dog"] and header["data"]["val"] == pre["val"]  # the run's own split
    assert header["data"]["mean"] == pre["mean"] and header["pretraining"]["run_id"] == \
        read_checkpoint(tiny.checkpoint)[0]["run_id"]
    classifier = tinymae.load(out / "classifier.npz")
    assert classifier.classes == ("cat", "dog")
    probs = classifier.predict_proba(classifier.preprocess(sorted(test_data.iterdir())))
    assert probs.shape == (6, 2) and np.allclose(probs.sum(axis=1), 1)


def encoder_weights(path, prefix="param/blocks.0.attn.qkv.w"):
    with np.load(path, allow_pickle=False) as f:
        return f[prefix]


def test_from_scratch_starts_from_random_weights(tiny, capsys):
    """With a vanishing learning rate the saved encoder is its start: the checkpoint's weights, or with
    --from-scratch a fresh MaskedAutoencoderViT(config, seed) (the default --out names the variant)."""
    still = ["--lr", "1e-12", "--min-lr", "0", "--epochs", "1"]
    pre, _ = run_ok(args(tiny, None, *still, "--seed", "4"), capsys)
    scratch, _ = run_ok(args(tiny, None, *still, "--seed", "4", "--from-scratch"), capsys)
    assert pre["out"] == str(tiny.checkpoint.parent / "finetune-seed4")
    assert scratch["out"] == str(tiny.checkpoint.parent / "finetune-scratch-seed4") and scratch["from_scratch"]

    header = read_checkpoint(tiny.checkpoint)[0]
    fresh = MaskedAutoencoderViT(ViTConfig(**header["config"]), seed=4)
    trained = encoder_weights(tiny.checkpoint)
    np.testing.assert_allclose(encoder_weights(tiny.checkpoint.parent / "finetune-seed4" / "classifier.npz"),
                               trained, atol=1e-6)
    np.testing.assert_allclose(encoder_weights(tiny.checkpoint.parent / "finetune-scratch-seed4" / "classifier.npz"),
                               to_numpy(fresh.params["blocks.0.attn.qkv.w"]), atol=1e-6)
    assert np.abs(trained - to_numpy(fresh.params["blocks.0.attn.qkv.w"])).max() > 1e-3


def test_partial_fine_tuning_leaves_the_frozen_encoder_as_pre_trained(tiny, capsys):
    """--trainable-blocks 0 (the tiny encoder has 1 block): the encoder in classifier.npz is the checkpoint's,
    bit for bit, while the head trains; the default --out names the variant. --drop-path runs too."""
    frozen, printed = run_ok(args(tiny, None, "--trainable-blocks", "0", "--seed", "5"), capsys)
    assert frozen["out"] == str(tiny.checkpoint.parent / "finetune-blocks0-seed5")
    assert "parameters trained" in printed
    saved = tiny.checkpoint.parent / "finetune-blocks0-seed5" / "classifier.npz"
    for name in ("param/blocks.0.attn.qkv.w", "param/patch_embed.w", "param/cls_token"):
        np.testing.assert_array_equal(encoder_weights(saved, name), encoder_weights(tiny.checkpoint, name))
    assert np.abs(encoder_weights(saved, "param/head.w")).max() > 1e-3  # started at ~2e-5

    mixed, _ = run_ok(args(tiny, None, "--mixup", "0.8", "--seed", "5"), capsys)
    assert mixed["out"] == str(tiny.checkpoint.parent / "finetune-mixup0.8-seed5")
    dropped, _ = run_ok(args(tiny, None, "--drop-path", "0.1", "--seed", "5"), capsys)
    assert dropped["out"] == str(tiny.checkpoint.parent / "finetune-droppath0.1-seed5")
    assert np.abs(encoder_weights(tiny.checkpoint.parent / "finetune-droppath0.1-seed5" / "classifier.npz")
                  - encoder_weights(tiny.checkpoint)).max() > 0  # the blocks trained


def test_more_trainable_blocks_than_the_encoder_has_is_refused(tiny, tmp_path, capsys):
    code, message, _ = run_main(args(tiny, tmp_path / "ft", "--trainable-blocks", "2"), capsys)
    assert_one_line_error(code, message, "--trainable-blocks 2", "has 1 blocks")
    assert not (tmp_path / "ft" / "classifier.npz").exists()


def test_labels_per_class_and_same_seed_same_numbers(tiny, tmp_path, capsys):
    """--labels-per-class 3: six photos of the pre-training run's training split, three per class, and the same
    validation photos; the same seed gives the same numbers, bit for bit."""
    a, printed = run_ok(args(tiny, tmp_path / "a", "--labels-per-class", "3"), capsys)
    b, _ = run_ok(args(tiny, tmp_path / "b", "--labels-per-class", "3"), capsys)
    assert a["n_train"] == 6 and a["n_val"] == 8
    details = json.loads((tmp_path / "a" / "result.json").read_text())
    assert details["settings"]["batch_size"] == 8  # the setting as given ...
    assert "1 steps of 6 per epoch" in printed  # ... and a batch of at most the labelled photos
    with Checkpoint(tmp_path / "a" / "classifier.npz") as ckpt:
        indices, record = np.array(ckpt.header["labelled"]), ckpt.header["data"]
    train_labels = np.delete(np.array(record["labels"]), record["val"])
    assert len(indices) == 6 and (np.bincount(train_labels[indices]) == 3).all()

    same = lambda r: {k: v for k, v in r.items() if k not in ("out", "wall_time_s", "run_id")}  # noqa: E731
    assert same(a) == same(b)
    history = [json.loads((tmp_path / run / "result.json").read_text())["history"] for run in ("a", "b")]
    assert [h["train_loss"] for h in history[0]] == [h["train_loss"] for h in history[1]]
    np.testing.assert_array_equal(encoder_weights(tmp_path / "a" / "classifier.npz", "param/head.w"),
                                  encoder_weights(tmp_path / "b" / "classifier.npz", "param/head.w"))
    run_ok(args(tiny, tmp_path / "c", "--labels-per-class", "3", "--seed", "1"), capsys)
    with Checkpoint(tmp_path / "c" / "classifier.npz") as ckpt:
        assert ckpt.header["labelled"] != indices.tolist()


def test_an_interrupted_fine_tuning_resumes_bit_identical(tiny, tmp_path, monkeypatch, capsys):
    """Fine-tuning checkpoints every epoch, as pre-training: --resume after Ctrl-C ends where an uninterrupted
    run ends, bit for bit."""
    whole, _ = run_ok(args(tiny, tmp_path / "whole", "--epochs", "3", "--mixup", "0.8"), capsys)
    from tinymae import run as run_module
    real, calls = run_module.train_one_epoch, []

    def stop_in_epoch_two(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(run_module, "train_one_epoch", stop_in_epoch_two)
    code, message, _ = run_main(args(tiny, tmp_path / "cut", "--epochs", "3", "--mixup", "0.8"), capsys)
    assert code == 130 and "--resume" in message
    monkeypatch.undo()
    resumed, _ = run_ok(args(tiny, tmp_path / "cut", "--epochs", "3", "--mixup", "0.8", "--resume"), capsys)
    assert resumed["final_train_loss"] == whole["final_train_loss"]
    np.testing.assert_array_equal(encoder_weights(tmp_path / "cut" / "classifier.npz", "param/head.w"),
                                  encoder_weights(tmp_path / "whole" / "classifier.npz", "param/head.w"))


# ----------------------------------------------------------------------------------------------
# what the command refuses, each with one line

def assert_one_line_error(code, message, *expected):
    assert code not in (0, None) and message.startswith("error: ") and "\n" not in message.strip(), message
    for text in expected:
        assert text in message, message


def test_refuses_checkpoints_that_are_not_a_vit_mae(tiny, tmp_path, capsys):
    """A whole pre-training header around an MLP MAE."""
    model = MaskedAutoencoderMLP()
    header = read_checkpoint(tiny.checkpoint)[0]
    header = {**header, "arch": "mlp", "config": model.config.to_dict(),
              "settings": {**header["settings"], "arch": "mlp"}}
    del header["format"]
    path = tmp_path / "other.npz"
    save_checkpoint(path, header, model.params, extra={"mean_patch": np.zeros((64, 108), "float32")})
    code, message, _ = run_main(["--checkpoint", str(path), "--no-progress"], capsys)
    assert_one_line_error(code, message, str(path), "--arch vit")
    assert not (tmp_path / "finetune-seed0").exists()  # refused before making its output folder


def test_refuses_an_existing_result_unless_overwrite(tiny, tmp_path, capsys):
    out = tmp_path / "ft"
    run_ok(args(tiny, out, "--epochs", "1"), capsys)
    before = (out / "classifier.npz").read_bytes()
    code, message, _ = run_main(args(tiny, out, "--epochs", "1", "--seed", "2"), capsys)
    assert_one_line_error(code, message, "already holds a run", "--overwrite")
    assert (out / "classifier.npz").read_bytes() == before
    run_ok(args(tiny, out, "--epochs", "1", "--seed", "2", "--overwrite"), capsys)
    assert read_checkpoint(out / "classifier.npz")[0]["settings"]["seed"] == 2


@pytest.mark.parametrize("extra, expected", [
    (["--labels-per-class", "17"], "--labels-per-class 17"),
    (["--test-data", "nowhere"], "nowhere"),
    (["--json", "."], "--json"),
    (["--out", "a-file"], "--out"),
], ids=["too-many-labels", "missing-test-data", "json-is-a-folder", "out-is-a-file"])
def test_bad_inputs_fail_before_training(tiny, tmp_path, capsys, monkeypatch, extra, expected):
    (tmp_path / "a-file").write_text("x")
    monkeypatch.chdir(tmp_path)
    from tinymae import run as run_module
    monkeypatch.setattr(run_module, "train_one_epoch", lambda *a, **k: pytest.fail("trained before the check"))
    code, message, _ = run_main(args(tiny, tmp_path / "ft") + extra, capsys)
    assert_one_line_error(code, message, expected)


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], "--epochs must be in [1, 100000], got 0"),
    (["--labels-per-class", "0"], "--labels-per-class must be in [1, "),
    (["--layer-decay", "0"], "--layer-decay must be in (0, 1], got 0"),
    (["--label-smoothing", "1"], "--label-smoothing must be in [0, 1), got 1"),
    (["--lr", "0"], "--lr must be in (0, 10], got 0"),
    (["--seed", "-1"], "--seed must be in [0, "),
    (["--trainable-blocks", "-1"], "--trainable-blocks must be in [0, 64]"),
    (["--drop-path", "1"], "--drop-path must be in [0, 1), got 1"),
    (["--mixup", "-1"], "--mixup must be in [0, 10]"),
    (["--warmup-epochs", "1e308"], "--warmup-epochs must be in [0, 100000]"),
    (["--lr", "nan"], "--lr must be a finite number"),
])
def test_bad_flags_are_one_line_errors(flags, message, capsys):
    code, err, _ = run_main(["--checkpoint", "c.npz", *flags], capsys)
    assert_one_line_error(code, err, message)


def test_unparsable_flags_and_a_missing_checkpoint_are_usage_errors(capsys):
    for argv, expected in ((["--checkpoint", "c.npz", "--epochs", "two"], "invalid int value"),
                           ([], "the following arguments are required: --checkpoint")):
        code, err, _ = run_main(argv, capsys)
        assert code == 2 and expected in err


def test_eval_every_measures_the_accuracy_on_those_epochs_and_the_last(tiny, tmp_path, capsys):
    out = tmp_path / "ft"
    result, _ = run_ok(args(tiny, out, "--epochs", "3", "--eval-every", "2"), capsys)
    history = json.loads((out / "result.json").read_text())["history"]
    assert ["val_accuracy" in h for h in history] == [False, True, True]
    assert result["val_accuracy"] == history[-1]["val_accuracy"]


def test_ctrl_c_before_the_first_epoch_is_one_line_and_exit_code_130(tiny, tmp_path, monkeypatch, capsys):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    from tinymae import run as run_module
    monkeypatch.setattr(run_module, "train_one_epoch", interrupt)
    code, err, _ = run_main(args(tiny, tmp_path / "ft"), capsys)
    assert code == 130 and "Nothing was saved" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "ft" / "result.json").exists()


def test_resident_photos_fine_tune_as_the_host_side_batches(tiny, tmp_path, monkeypatch, capsys):
    """With the photos on the device (fast/cuda.py's DeviceImages) the run is the host-side one, number for number."""
    from tinymae import fast
    host, _ = run_ok(args(tiny, tmp_path / "host", "--drop-path", "0.1", "--mixup", "0.8"), capsys)
    real = fast.training_step
    monkeypatch.setattr(fast, "training_step", lambda *a, **k: real(*a, **k)._replace(resident=True))
    resident, _ = run_ok(args(tiny, tmp_path / "resident", "--drop-path", "0.1", "--mixup", "0.8"), capsys)
    assert resident["final_train_loss"] == host["final_train_loss"]
    assert resident["val_accuracy"] == host["val_accuracy"]
