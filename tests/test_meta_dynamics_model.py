"""GSSM / MLSM: permutation invariance, ragged masks, finite ELBO, gradients, bad input, checkpoints."""

from __future__ import annotations

import pytest
import torch

from modules import MetaDynamicsModel
from modules.models.meta_dynamics_net import VARIANTS

OBS, ACT = 6, 1  # acrobot


def tiny_model(variant: str, env: str = "acrobot") -> MetaDynamicsModel:
    torch.manual_seed(0)
    model = MetaDynamicsModel(env=env, variant=variant, hidden_dim=32, latent_dim=4, num_heads=2)
    # non-trivial normalisers, as after fitting on data
    model.x_normalizer.fit(torch.randn(100, OBS + ACT) * 2 + 1)
    model.y_normalizer.fit(torch.randn(100, OBS) * 0.3)
    return model.eval()


def batch(b=3, n_c=12, n_t=9, seed=0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "context_x": torch.randn(b, n_c, OBS + ACT, generator=g),
        "context_y": torch.randn(b, n_c, OBS, generator=g),
        "context_mask": torch.ones(b, n_c, dtype=torch.bool),
        "target_x": torch.randn(b, n_t, OBS + ACT, generator=g),
        "target_y": torch.randn(b, n_t, OBS, generator=g),
    }


@pytest.mark.parametrize("variant", VARIANTS)
def test_shuffling_the_context_changes_neither_latent_nor_prediction(variant):
    model, data = tiny_model(variant), batch()
    perm = torch.randperm(data["context_x"].shape[1], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        enc = model.infer_context(data["context_x"], data["context_y"])
        enc_p = model.infer_context(data["context_x"][:, perm], data["context_y"][:, perm])
        pred = model.predict(data["target_x"], enc)
        pred_p = model.predict(data["target_x"], enc_p)
    torch.testing.assert_close(enc.q_zc.mean, enc_p.q_zc.mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(enc.q_zc.stddev, enc_p.q_zc.stddev, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pred.mean, pred_p.mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pred.stddev, pred_p.stddev, atol=1e-5, rtol=1e-5)
    # and the context matters: another context gives another latent
    other = model.infer_context(data["context_x"] + 1.0, data["context_y"])
    assert not torch.allclose(enc.q_zc.mean, other.q_zc.mean, atol=1e-4)


@pytest.mark.parametrize("variant", VARIANTS)
def test_ragged_masks_equal_the_unpadded_context(variant):
    model, data = tiny_model(variant), batch(b=1, n_c=7)
    padded_x = torch.cat([data["context_x"], 50 * torch.randn(1, 5, OBS + ACT)], dim=1)
    padded_y = torch.cat([data["context_y"], 50 * torch.randn(1, 5, OBS)], dim=1)
    mask = torch.arange(12)[None] < 7
    with torch.no_grad():
        enc = model.infer_context(data["context_x"], data["context_y"])
        enc_pad = model.infer_context(padded_x, padded_y, mask)
        pred, pred_pad = model.predict(data["target_x"], enc), model.predict(data["target_x"], enc_pad)
    torch.testing.assert_close(enc.q_zc.mean, enc_pad.q_zc.mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pred.mean, pred_pad.mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pred.stddev, pred_pad.stddev, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_empty_context_gives_finite_prior_prediction(variant):
    model, data = tiny_model(variant), batch()
    mask = torch.zeros_like(data["context_mask"])
    with torch.no_grad():
        enc = model.infer_context(data["context_x"], data["context_y"], mask)
        pred = model.predict(data["target_x"], enc)
        other = model.infer_context(data["context_x"] + 3.0, -data["context_y"], mask)
        other_pred = model.predict(data["target_x"], other)
    assert torch.isfinite(enc.q_zc.mean).all() and torch.isfinite(pred.mean).all()
    # the prior: nothing of the masked-out transitions reaches the latent or the prediction
    torch.testing.assert_close(other.q_zc.mean, enc.q_zc.mean)
    torch.testing.assert_close(other_pred.mean, pred.mean)


@pytest.mark.parametrize("variant", VARIANTS)
def test_elbo_terms_finite_kl_nonnegative_and_gradients_reach_every_parameter(variant):
    model = tiny_model(variant).train()
    data = batch()
    data["context_mask"][0, 5:] = False  # ragged
    loss, terms = model.loss(data)
    assert torch.isfinite(loss)
    assert all(torch.isfinite(t).all() for t in terms.values())
    assert (terms["kl"] >= 0).all()
    assert terms["nll"].shape == terms["kl"].shape == (3, 9)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reaches {missing}"


def test_variants_are_one_family_with_the_expected_parts():
    names = {
        v: {n.split(".")[1] for n, _ in tiny_model(v).named_parameters() if n.startswith("net.")} for v in VARIANTS
    }
    assert "blocks" in names["gssm"] and "target_latent_head" in names["gssm"]
    assert "blocks" not in names["mlsm_v0"] and "cross" not in names["mlsm_v0"]
    assert "cross" in names["mlsm_v1"] and "target_latent_head" not in names["mlsm_v1"]


def test_context_of_the_wrong_feature_size_is_a_clear_error():
    model = tiny_model("gssm")
    with pytest.raises(ValueError, match=r"context_x has feature size 5.*expected 7.*acrobot"):
        model.infer_context(torch.randn(2, 4, 5), torch.randn(2, 4, OBS))
    with pytest.raises(ValueError, match=r"context_y has feature size 4.*expected 6"):
        model.infer_context(torch.randn(2, 4, OBS + ACT), torch.randn(2, 4, 4))
    enc = model.infer_context(torch.randn(2, 4, OBS + ACT), torch.randn(2, 4, OBS))
    with pytest.raises(ValueError, match=r"x has feature size 3"):
        model.predict(torch.randn(2, 4, 3), enc)


def test_unknown_variant_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown model variant 'gsm'.*gssm"):
        MetaDynamicsModel(variant="gsm")


def test_prediction_is_in_raw_units_and_normalisers_are_saved(tmp_path):
    model = tiny_model("gssm")
    sd = model.state_dict()
    assert {"x_normalizer.mean", "x_normalizer.std", "y_normalizer.mean", "y_normalizer.std"} <= set(sd)
    data = batch()
    enc = model.infer_context(data["context_x"], data["context_y"])
    pred = model.predict(data["target_x"], enc)
    assert pred.mean.shape == (3, 9, OBS) and (pred.stddev > 0).all()
    # raw units: Δs = mean + std · (normalised Δs) and the next state is s + Δs, so doubling the Δs
    # std and moving its mean by 0.5 maps Δs to 2 Δs − mean + 0.5
    delta, mean = pred.mean - data["target_x"][..., :OBS], model.y_normalizer.mean.clone()
    with torch.no_grad():
        model.y_normalizer.mean += 0.5
        model.y_normalizer.std *= 2.0
    shifted = model.predict(data["target_x"], enc)
    torch.testing.assert_close(shifted.mean - data["target_x"][..., :OBS], 2.0 * delta - mean + 0.5)
    torch.testing.assert_close(shifted.stddev, 2.0 * pred.stddev)
    fresh = MetaDynamicsModel(env="acrobot", hidden_dim=32, latent_dim=4, num_heads=2)
    fresh.load_state_dict(sd)
    torch.testing.assert_close(fresh.y_normalizer.std, model.y_normalizer.std)


def test_checkpoint_from_another_env_is_a_clear_error():
    acro = tiny_model("gssm", env="acrobot")
    cart = MetaDynamicsModel(env="cartpole_swingup", hidden_dim=32, latent_dim=4, num_heads=2)
    ckpt = {"hyper_parameters": dict(acro.hparams), "state_dict": acro.state_dict()}
    with pytest.raises(ValueError, match=r"trained with env='acrobot'.*env='cartpole_swingup'"):
        cart.on_load_checkpoint(ckpt)
